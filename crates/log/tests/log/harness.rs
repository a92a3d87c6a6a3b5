//! Test harness: a router with the default modules plus the log module (placed as the server
//! places it), accounts, mailbox clients, and a store wrapper that can refuse commits.
#![allow(dead_code)]

use async_trait::async_trait;
use confab_core::archive::{
    ArchivePage, ArchivePrefs, ArchiveQuery, ArchiveStore, ArchivedMessage, CommitReceipt,
    NewMessage,
};
use confab_core::metrics::Metrics;
use confab_core::store::{
    AccountStore, BlockStore, DocumentStore, OfflineMessage, OfflineStore, ReadStateStore,
    RosterItem, RosterStore, Store, StoreError, StoreResult, StoredCredentials, TokenInfo,
    TokenStore,
};
use confab_core::{BareJid, FullJid, Jid, Stanza};
use confab_log::receipt::Receipt;
use confab_log::{LogConfig, LogModule, MamModule};
use confab_modules::{ModuleOptions, modules_with_log};
use confab_router::{Module, Router};
use confab_sessions::{Mailbox, Resource, SessionCommand, SessionManager};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Accounts every test router has.
pub const USERS: &[&str] = &["alice", "bob", "carol"];

/// Credentials nobody logs in with: these tests never authenticate.
fn credentials() -> StoredCredentials {
    StoredCredentials {
        salt: vec![1; 16],
        iterations: 4096,
        stored_key_sha1: vec![2; 20],
        server_key_sha1: vec![3; 20],
        stored_key_sha256: vec![4; 32],
        server_key_sha256: vec![5; 32],
    }
}

/// Creates [`USERS`] in `store` unless they exist (a reopened store has them already).
pub async fn create_users(store: &dyn Store) {
    for user in USERS {
        match store.create_account(user, &credentials()).await {
            Ok(()) | Err(StoreError::Conflict) => {}
            Err(error) => panic!("account {user}: {error}"),
        }
    }
}

/// A router over `store` with the default modules, the log module inserted before offline
/// storage and the MAM module last, as `confab serve` does.
pub fn router_over(store: Arc<dyn Store>) -> Arc<Router> {
    let options = ModuleOptions {
        registration_open: false,
        scram_iterations: 4096,
    };
    let log: Arc<dyn Module> = Arc::new(LogModule::new(store.clone(), LogConfig::default()));
    let modules = modules_with_log(&options, vec![log, Arc::new(MamModule::new())]);
    Arc::new(Router::new(
        BareJid::new("localhost").expect("domain"),
        Arc::new(SessionManager::new()),
        store,
        Arc::new(Metrics::new()),
        modules,
    ))
}

/// A router over a fresh in-memory store with [`USERS`]; the store is returned for checks.
pub async fn router() -> (Arc<Router>, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(
        confab_store::SqliteStore::open_in_memory()
            .await
            .expect("store"),
    );
    create_users(store.as_ref()).await;
    (router_over(store.clone()), store)
}

/// A bound session whose mailbox the test reads.
pub struct Client {
    pub resource: Arc<Resource>,
    pub mailbox: Mailbox,
    pub router: Arc<Router>,
}

impl Client {
    /// Binds `full_jid` as a session does after resource binding.
    pub async fn connect(router: &Arc<Router>, full_jid: &str) -> Client {
        let (resource, mailbox) = Resource::new(FullJid::new(full_jid).expect("jid"), 1024);
        router.sessions.bind(resource.clone());
        router.session_opened(&resource).await;
        Client {
            resource,
            mailbox,
            router: router.clone(),
        }
    }

    /// Binds and sends initial presence, consuming its echo, so bare-JID messages arrive.
    pub async fn available(router: &Arc<Router>, full_jid: &str) -> Client {
        let mut client = Self::connect(router, full_jid).await;
        client.send("<presence xmlns='jabber:client'/>").await;
        let echo = client.recv().await;
        assert_eq!(echo.element.name(), "presence", "{}", xml(&echo));
        client
    }

    /// Sends a stanza as the session would: parse, stamp `from`, hand to the router.
    pub async fn send(&self, xml: &str) {
        let element = xml.parse().expect("test xml");
        let mut stanza = Stanza::from_element(element).expect("stanza");
        stanza.set_from(Some(Jid::from(self.resource.jid.clone())));
        self.router.inbound(&self.resource, stanza).await;
    }

    /// Sends a chat message with a body and the given extra attributes and children.
    pub async fn chat(&self, to: &str, attrs: &str, body: &str, extra: &str) {
        self.send(&format!(
            "<message xmlns='jabber:client' type='chat' to='{to}' {attrs}><body>{body}</body>{extra}</message>"
        ))
        .await;
    }

    /// The next stanza delivered to this session (fails the test after 5 s).
    pub async fn recv(&mut self) -> Stanza {
        match tokio::time::timeout(Duration::from_secs(5), self.mailbox.receiver.recv()).await {
            Ok(Some(SessionCommand::Deliver(stanza))) => *stanza,
            Ok(None) => panic!("{}: mailbox closed", self.resource.jid),
            Err(_) => panic!("{}: nothing received within 5 s", self.resource.jid),
        }
    }

    /// The next stanza, which must be a commit receipt.
    pub async fn receipt(&mut self) -> Receipt {
        let stanza = self.recv().await;
        Receipt::from_message(&stanza.element)
            .unwrap_or_else(|| panic!("expected a receipt, got {}", xml(&stanza)))
    }

    /// Asserts nothing more is delivered within 100 ms.
    pub async fn expect_silence(&mut self) {
        if let Ok(Some(SessionCommand::Deliver(stanza))) =
            tokio::time::timeout(Duration::from_millis(100), self.mailbox.receiver.recv()).await
        {
            panic!("{}: unexpected stanza {}", self.resource.jid, xml(&stanza));
        }
    }

    /// Disconnects like a dropped connection.
    pub async fn disconnect(self) {
        if self.router.sessions.unbind(&self.resource) {
            self.router.session_closed(&self.resource).await;
        }
    }
}

/// A stanza as text, for assertion messages.
pub fn xml(stanza: &Stanza) -> String {
    String::from(&stanza.element)
}

/// The text of a message's body.
pub fn body(stanza: &Stanza) -> Option<String> {
    stanza
        .element
        .get_child("body", confab_core::ns::CLIENT)
        .map(confab_core::Element::text)
}

/// The `(id, by)` of every XEP-0359 `<stanza-id/>` of a message.
pub fn stanza_ids(stanza: &Stanza) -> Vec<(String, String)> {
    stanza
        .element
        .children()
        .filter(|c| c.is("stanza-id", confab_log::receipt::SID))
        .map(|c| {
            (
                c.attr("id").unwrap_or_default().to_owned(),
                c.attr("by").unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// A store whose archive commits fail while `failing` is set, and whose offline queue
/// refuses writes while `offline_down` is set (a crash right after a commit looks the same
/// to the queue); everything else delegates.
pub struct FlakyStore {
    pub inner: confab_store::SqliteStore,
    pub failing: AtomicBool,
    pub offline_down: AtomicBool,
}

impl FlakyStore {
    /// Makes commits fail (`true`) or succeed again (`false`).
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

#[async_trait]
impl ArchiveStore for FlakyStore {
    async fn append(&self, batch: &[NewMessage]) -> StoreResult<Vec<CommitReceipt>> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("disk on fire".into()));
        }
        self.inner.append(batch).await
    }
    async fn history(
        &self,
        conversation: &str,
        after_seq: Option<u64>,
        before_seq: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<ArchivedMessage>> {
        self.inner
            .history(conversation, after_seq, before_seq, limit)
            .await
    }
    async fn message_by_id(&self, server_id: &str) -> StoreResult<Option<ArchivedMessage>> {
        self.inner.message_by_id(server_id).await
    }
    async fn last_seq(&self, conversation: &str) -> StoreResult<u64> {
        self.inner.last_seq(conversation).await
    }
    async fn purge_before(&self, cutoff_ms: i64) -> StoreResult<u64> {
        self.inner.purge_before(cutoff_ms).await
    }
    async fn query_archive(&self, query: &ArchiveQuery) -> StoreResult<ArchivePage> {
        self.inner.query_archive(query).await
    }
    async fn query_conversation(
        &self,
        conversation: &str,
        query: &ArchiveQuery,
    ) -> StoreResult<ArchivePage> {
        self.inner.query_conversation(conversation, query).await
    }
    async fn archive_prefs(&self, owner: &str) -> StoreResult<ArchivePrefs> {
        self.inner.archive_prefs(owner).await
    }
    async fn set_archive_prefs(&self, owner: &str, prefs: &ArchivePrefs) -> StoreResult<()> {
        self.inner.set_archive_prefs(owner, prefs).await
    }
}

#[async_trait]
impl AccountStore for FlakyStore {
    async fn create_account(&self, username: &str, c: &StoredCredentials) -> StoreResult<()> {
        self.inner.create_account(username, c).await
    }
    async fn delete_account(&self, username: &str) -> StoreResult<()> {
        self.inner.delete_account(username).await
    }
    async fn set_credentials(&self, username: &str, c: &StoredCredentials) -> StoreResult<()> {
        self.inner.set_credentials(username, c).await
    }
    async fn credentials(&self, username: &str) -> StoreResult<Option<StoredCredentials>> {
        self.inner.credentials(username).await
    }
    async fn account_exists(&self, username: &str) -> StoreResult<bool> {
        self.inner.account_exists(username).await
    }
    async fn list_accounts(&self) -> StoreResult<Vec<String>> {
        self.inner.list_accounts().await
    }
}

#[async_trait]
impl RosterStore for FlakyStore {
    async fn roster(&self, username: &str) -> StoreResult<(u64, Vec<RosterItem>)> {
        self.inner.roster(username).await
    }
    async fn roster_item(&self, username: &str, contact: &str) -> StoreResult<Option<RosterItem>> {
        self.inner.roster_item(username, contact).await
    }
    async fn put_roster_item(&self, username: &str, item: &RosterItem) -> StoreResult<u64> {
        self.inner.put_roster_item(username, item).await
    }
    async fn remove_roster_item(&self, username: &str, contact: &str) -> StoreResult<u64> {
        self.inner.remove_roster_item(username, contact).await
    }
}

#[async_trait]
impl OfflineStore for FlakyStore {
    async fn push_offline(&self, username: &str, message: &OfflineMessage) -> StoreResult<()> {
        if self.offline_down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("offline queue down".into()));
        }
        self.inner.push_offline(username, message).await
    }
    async fn push_offline_archived(&self, username: &str, server_id: &str) -> StoreResult<()> {
        if self.offline_down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("offline queue down".into()));
        }
        self.inner.push_offline_archived(username, server_id).await
    }
    async fn take_offline(&self, username: &str) -> StoreResult<Vec<OfflineMessage>> {
        self.inner.take_offline(username).await
    }
}

#[async_trait]
impl DocumentStore for FlakyStore {
    async fn document(&self, username: &str, key: &str) -> StoreResult<Option<String>> {
        self.inner.document(username, key).await
    }
    async fn put_document(&self, username: &str, key: &str, xml: &str) -> StoreResult<()> {
        self.inner.put_document(username, key, xml).await
    }
}

#[async_trait]
impl BlockStore for FlakyStore {
    async fn blocklist(&self, username: &str) -> StoreResult<Vec<String>> {
        self.inner.blocklist(username).await
    }
    async fn block(&self, username: &str, jids: &[String]) -> StoreResult<()> {
        self.inner.block(username, jids).await
    }
    async fn unblock(&self, username: &str, jids: &[String]) -> StoreResult<()> {
        self.inner.unblock(username, jids).await
    }
}

#[async_trait]
impl ReadStateStore for FlakyStore {
    async fn mark_read(&self, owner: &str, conversation: &str, seq: u64) -> StoreResult<u64> {
        self.inner.mark_read(owner, conversation, seq).await
    }
    async fn read_position(&self, owner: &str, conversation: &str) -> StoreResult<u64> {
        self.inner.read_position(owner, conversation).await
    }
    async fn read_positions(&self, owner: &str) -> StoreResult<Vec<(String, u64)>> {
        self.inner.read_positions(owner).await
    }
    async fn unread_count(&self, owner: &str, conversation: &str) -> StoreResult<u64> {
        self.inner.unread_count(owner, conversation).await
    }
    async fn seq_by_client_id(
        &self,
        conversation: &str,
        sender: &str,
        client_id: &str,
    ) -> StoreResult<Option<u64>> {
        self.inner
            .seq_by_client_id(conversation, sender, client_id)
            .await
    }
}

#[async_trait]
impl TokenStore for FlakyStore {
    async fn put_token(&self, hash: &[u8; 32], info: &TokenInfo) -> StoreResult<()> {
        self.inner.put_token(hash, info).await
    }
    async fn token_owner(&self, hash: &[u8; 32]) -> StoreResult<Option<TokenInfo>> {
        self.inner.token_owner(hash).await
    }
    async fn revoke_for_session(&self, full_jid: &str, session: u64) -> StoreResult<u64> {
        self.inner.revoke_for_session(full_jid, session).await
    }
    async fn revoke_all(&self) -> StoreResult<u64> {
        self.inner.revoke_all().await
    }
}

#[async_trait]
impl confab_core::client_view::ClientViewStore for FlakyStore {
    async fn conversations(
        &self,
        owner: &str,
        after: Option<&confab_core::client_view::ConversationCursor>,
        limit: u32,
    ) -> StoreResult<confab_core::client_view::ConversationPage> {
        self.inner.conversations(owner, after, limit).await
    }
    async fn sync(
        &self,
        username: &str,
        owner: &str,
        since: Option<&confab_core::client_view::SyncToken>,
        limit: u32,
    ) -> Result<confab_core::client_view::SyncFeed, confab_core::client_view::SyncError> {
        self.inner.sync(username, owner, since, limit).await
    }
}

#[async_trait]
impl confab_core::apps::AppStore for FlakyStore {
    async fn put_app(
        &self,
        app: &confab_core::apps::App,
        secret_hash: &[u8; 32],
    ) -> StoreResult<()> {
        self.inner.put_app(app, secret_hash).await
    }
    async fn list_apps(&self) -> StoreResult<Vec<confab_core::apps::App>> {
        self.inner.list_apps().await
    }
    async fn delete_app(&self, client_id: &str) -> StoreResult<()> {
        self.inner.delete_app(client_id).await
    }
    async fn app_secret(
        &self,
        client_id: &str,
    ) -> StoreResult<Option<(confab_core::apps::App, [u8; 32])>> {
        self.inner.app_secret(client_id).await
    }
}
