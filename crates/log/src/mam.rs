//! XEP-0313 Message Archive Management over each account's archive (`urn:xmpp:mam:2`).
//!
//! An account's archive is the one-to-one messages it sent or received, as the [`LogModule`]
//! committed them (groups will join it). A query is an IQ `set` to the account's own bare JID
//! (or without `to`):
//!
//! ```text
//! <iq type='set'><query xmlns='urn:xmpp:mam:2' queryid='q1'>
//!   <x xmlns='jabber:x:data' type='submit'> FORM_TYPE, with, start, end, after-id, before-id, ids </x>
//!   <set xmlns='http://jabber.org/protocol/rsm'><max/> <after/> | <before/> </set>
//!   <flip-page/>?
//! </query></iq>
//!   → one <message><result queryid id=server-id><forwarded><delay/><message/></forwarded></result></message>
//!     per match, to the querying resource, oldest first (newest first with flip-page)
//!   → <iq type='result'><fin complete='true|false'><set><first/><last/><count/>?</set></fin></iq>
//! ```
//!
//! Pages are in server id order (UUIDv7, the order of arrival). RSM `<after/>`/`<before/>` and
//! the `after-id`/`before-id` fields take server ids that must be in the archive
//! (`item-not-found` otherwise, XEP-0313 §4.1.4 of v1.1); `<before/>` without a value is the
//! last page. `<max/>` defaults to [`DEFAULT_QUERY_LIMIT`] and is capped at
//! [`MAX_QUERY_LIMIT`]; `<max>0</max>` answers only the `<count/>` (XEP-0059 §2.5), the only
//! query that counts, since counting reads the whole matching archive. A `with` holding a
//! full JID is treated as its bare JID: Confab archives bare JIDs only.
//!
//! Preferences (XEP-0313 §6, `<prefs/>`) are stored per account. Confab commits every message
//! for delivery whatever they say (DESIGN.md, "Delivery model": nothing is acknowledged that
//! is not durable); they govern what the account's own queries return, at query time, so a
//! change applies to the messages already stored too.
//!
//! **Architecture invariant:** protocol only; storage through `confab_core::archive`, sessions
//! through the router.
//!
//! [`LogModule`]: crate::LogModule

use crate::receipt::{format_stamp, parse_stamp};
use async_trait::async_trait;
use confab_core::archive::{
    ArchiveDefault, ArchivePage, ArchivePrefs, ArchiveQuery, ArchivedMessage, DEFAULT_QUERY_LIMIT,
    MAX_QUERY_LIMIT, Page,
};
use confab_core::stanza::element;
use confab_core::store::StoreError;
use confab_core::{
    BareJid, Element, Jid, Stanza, StanzaError, StanzaErrorCondition, StanzaErrorType, ns,
};
use confab_router::{IqOutcome, Module, Router};

/// XEP-0313 Message Archive Management.
pub const MAM: &str = "urn:xmpp:mam:2";
/// XEP-0313 extended queries: the `before-id`, `after-id` and `ids` fields and `<flip-page/>`.
pub const MAM_EXTENDED: &str = "urn:xmpp:mam:2#extended";
/// XEP-0059 Result Set Management.
pub const RSM: &str = "http://jabber.org/protocol/rsm";
/// XEP-0297 Stanza Forwarding.
pub const FORWARD: &str = "urn:xmpp:forward:0";

/// Most ids one `ids` field may name: a page never holds more.
const MAX_IDS: usize = MAX_QUERY_LIMIT as usize;

/// Answers `urn:xmpp:mam:2` queries and preferences for the requesting account's archive.
#[derive(Debug, Default)]
pub struct MamModule;

impl MamModule {
    /// The module; it reads the archive through the router's store.
    pub fn new() -> Self {
        Self
    }
}

/// Why a request is refused; boxed, since a `StanzaError` is large and errors are rare.
pub type Refusal = Box<StanzaError>;

fn bad_request(text: &str) -> Refusal {
    Box::new(StanzaError::new(StanzaErrorCondition::BadRequest).with_text(text))
}

fn jid_malformed() -> Refusal {
    Box::new(
        StanzaError::new(StanzaErrorCondition::JidMalformed).with_type(StanzaErrorType::Modify),
    )
}

/// The error a query gets when the archive could not answer it.
pub fn store_error(error: &StoreError) -> StanzaError {
    match error {
        StoreError::NotFound => StanzaError::new(StanzaErrorCondition::ItemNotFound)
            .with_text("no such message in this archive"),
        error => {
            tracing::warn!(%error, "archive query failed");
            StanzaError::new(StanzaErrorCondition::InternalServerError)
                .with_type(StanzaErrorType::Wait)
        }
    }
}

/// What a `<query/>` asked for, before preferences are applied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// The client's `queryid`, echoed in every result.
    pub query_id: Option<String>,
    /// The filters and the page asked for.
    pub query: ArchiveQuery,
    /// XEP-0313 `<flip-page/>`: the page's messages in reverse order.
    pub flip: bool,
}

/// The single value of a form field (an absent `<value/>` counts as empty).
fn single_value(field: &Element) -> Result<String, Refusal> {
    let mut values = field.children().filter(|c| c.is("value", ns::DATA_FORMS));
    let value = values.next().map(Element::text).unwrap_or_default();
    if values.next().is_some() {
        return Err(bad_request("field takes one value"));
    }
    Ok(value)
}

/// A non-empty single value, or `None` for an empty one (clients send empty fields).
fn optional_value(field: &Element) -> Result<Option<String>, Refusal> {
    let value = single_value(field)?;
    Ok((!value.trim().is_empty()).then(|| value.trim().to_owned()))
}

fn parse_time(field: &Element) -> Result<Option<i64>, Refusal> {
    optional_value(field)?
        .map(|text| parse_stamp(&text).ok_or_else(|| bad_request("not an XEP-0082 DateTime")))
        .transpose()
}

/// Reads the XEP-0004 form of a query into `query`.
fn apply_form(form: &Element, query: &mut ArchiveQuery) -> Result<(), Refusal> {
    if !matches!(form.attr("type"), None | Some("submit")) {
        return Err(bad_request("the query form must be submitted"));
    }
    for field in form.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
        let var = field.attr("var").unwrap_or_default();
        match var {
            "FORM_TYPE" => {
                if single_value(field)? != MAM {
                    return Err(bad_request("FORM_TYPE must be urn:xmpp:mam:2"));
                }
            }
            "with" => {
                query.with = optional_value(field)?
                    .map(|text| {
                        Jid::new(&text)
                            .map(|jid| jid.to_bare().to_string())
                            .map_err(|_| jid_malformed())
                    })
                    .transpose()?;
            }
            "start" => query.start_ms = parse_time(field)?,
            "end" => query.end_ms = parse_time(field)?,
            "after-id" => query.after_id = optional_value(field)?,
            "before-id" => query.before_id = optional_value(field)?,
            "ids" => {
                let ids: Vec<String> = field
                    .children()
                    .filter(|c| c.is("value", ns::DATA_FORMS))
                    .map(|v| v.text().trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .collect();
                if ids.len() > MAX_IDS {
                    return Err(Box::new(
                        StanzaError::new(StanzaErrorCondition::PolicyViolation)
                            .with_type(StanzaErrorType::Modify)
                            .with_text("too many ids"),
                    ));
                }
                query.ids = Some(ids);
            }
            // XEP-0313 §4.1.5 (v1.1): a field the server does not know is an error, so a
            // client never takes an unfiltered answer for a filtered one.
            _ => return Err(bad_request("unknown query field")),
        }
    }
    Ok(())
}

/// Sets one RSM cursor, refusing a second, different one from the form.
fn set_cursor(slot: &mut Option<String>, value: String) -> Result<(), Refusal> {
    match slot {
        Some(existing) if *existing != value => {
            Err(bad_request("RSM cursor contradicts the form's id field"))
        }
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// Reads the XEP-0059 `<set/>` of a query into `query`.
fn apply_rsm(set: &Element, query: &mut ArchiveQuery) -> Result<(), Refusal> {
    for child in set.children().filter(|c| c.ns() == RSM) {
        let text = child.text();
        let text = text.trim();
        match child.name() {
            "max" => {
                query.limit = text
                    .parse::<u32>()
                    .map_err(|_| bad_request("<max/> must be a non-negative integer"))?
                    .min(MAX_QUERY_LIMIT);
            }
            "after" => {
                if text.is_empty() {
                    return Err(bad_request("<after/> needs an id"));
                }
                set_cursor(&mut query.after_id, text.to_owned())?;
            }
            "before" => {
                query.page = Page::Backward;
                if !text.is_empty() {
                    set_cursor(&mut query.before_id, text.to_owned())?;
                }
            }
            "index" => {
                return Err(Box::new(
                    StanzaError::new(StanzaErrorCondition::FeatureNotImplemented)
                        .with_text("paging by index is not supported; use after or before"),
                ));
            }
            _ => return Err(bad_request("unknown RSM element")),
        }
    }
    Ok(())
}

/// Parses a `<query/>` (of an IQ `set`) over `owner`'s archive (an account's, or a room's).
pub fn parse_query(owner: &BareJid, payload: &Element) -> Result<Request, Refusal> {
    let mut request = Request {
        query_id: payload.attr("queryid").map(str::to_owned),
        query: ArchiveQuery {
            owner: owner.to_string(),
            limit: DEFAULT_QUERY_LIMIT,
            ..ArchiveQuery::default()
        },
        flip: false,
    };
    for child in payload.children() {
        if child.is("x", ns::DATA_FORMS) {
            apply_form(child, &mut request.query)?;
        } else if child.is("set", RSM) {
            apply_rsm(child, &mut request.query)?;
        } else if child.is("flip-page", MAM) {
            request.flip = true;
        } else {
            return Err(bad_request("unexpected element in the query"));
        }
    }
    // XEP-0059 §2.5: <max>0</max> asks how many there are.
    request.query.count = request.query.limit == 0;
    Ok(request)
}

/// The form a client fills (XEP-0313 §4.1.5 of v1.1, "Retrieving form fields").
pub fn query_form() -> Element {
    let field =
        |var: &str, kind: &str| element("field", ns::DATA_FORMS, &[("var", var), ("type", kind)]);
    let mut form_type = field("FORM_TYPE", "hidden");
    form_type.append_child(
        Element::builder("value", ns::DATA_FORMS)
            .append(MAM)
            .build(),
    );
    let mut form = element("x", ns::DATA_FORMS, &[("type", "form")]);
    form.append_child(form_type);
    for (var, kind) in [
        ("with", "jid-single"),
        ("start", "text-single"),
        ("end", "text-single"),
        ("after-id", "text-single"),
        ("before-id", "text-single"),
        ("ids", "text-multi"),
    ] {
        form.append_child(field(var, kind));
    }
    let mut query = element("query", MAM, &[]);
    query.append_child(form);
    query
}

/// Narrows a query to what the owner's preferences show (see the module documentation).
async fn apply_prefs(
    router: &Router,
    owner: &BareJid,
    query: &mut ArchiveQuery,
) -> Result<(), StoreError> {
    let prefs = router.store.archive_prefs(owner.as_str()).await?;
    query.exclude = prefs.never;
    query.only = match prefs.default {
        ArchiveDefault::Always => None,
        ArchiveDefault::Never => Some(prefs.always),
        ArchiveDefault::Roster => {
            let username = owner.node().map(|n| n.as_str()).unwrap_or_default();
            let (_, items) = router.store.roster(username).await?;
            let mut only = prefs.always;
            only.extend(items.into_iter().filter(|i| i.in_roster).map(|i| i.jid));
            // Notes to self are the owner's own conversation.
            only.push(owner.to_string());
            Some(only)
        }
    };
    Ok(())
}

/// The `<message/>` carrying one result to the querying resource, from the archive `owner`.
pub fn result_message(
    owner: &BareJid,
    to: &str,
    query_id: Option<&str>,
    message: &ArchivedMessage,
) -> Option<Element> {
    let original: Element = match message.xml.parse() {
        Ok(original) => original,
        Err(error) => {
            tracing::warn!(%error, id = %message.server_id, "archived message is not XML; skipped");
            return None;
        }
    };
    let stamp = format_stamp(message.stamp_ms);
    let mut forwarded = element("forwarded", FORWARD, &[]);
    forwarded.append_child(element("delay", ns::DELAY, &[("stamp", &stamp)]));
    forwarded.append_child(original);
    let mut attrs: Vec<(&'static str, &str)> = vec![("id", &message.server_id)];
    if let Some(query_id) = query_id {
        attrs.push(("queryid", query_id));
    }
    let mut result = element("result", MAM, &attrs);
    result.append_child(forwarded);
    let owner = owner.to_string();
    let mut envelope = element(
        "message",
        ns::CLIENT,
        &[("from", owner.as_str()), ("to", to)],
    );
    envelope.append_child(result);
    Some(envelope)
}

/// The `<fin/>` closing a query.
pub fn fin(page: &ArchivePage, flip: bool) -> Element {
    let mut set = element("set", RSM, &[]);
    let (first, last) = if flip {
        (page.last_id(), page.first_id())
    } else {
        (page.first_id(), page.last_id())
    };
    let text = |name: &str, value: &str| Element::builder(name, RSM).append(value).build();
    if let (Some(first), Some(last)) = (first, last) {
        set.append_child(text("first", first));
        set.append_child(text("last", last));
    }
    if let Some(count) = page.count {
        set.append_child(text("count", &count.to_string()));
    }
    let complete = if page.complete { "true" } else { "false" };
    let mut fin = element("fin", MAM, &[("complete", complete)]);
    fin.append_child(set);
    fin
}

fn prefs_element(prefs: &ArchivePrefs) -> Element {
    let mut element_out = element("prefs", MAM, &[("default", prefs.default.as_str())]);
    for (name, jids) in [("always", &prefs.always), ("never", &prefs.never)] {
        let mut list = element(name, MAM, &[]);
        for jid in jids {
            list.append_child(Element::builder("jid", MAM).append(jid.as_str()).build());
        }
        element_out.append_child(list);
    }
    element_out
}

fn parse_prefs(payload: &Element) -> Result<ArchivePrefs, Refusal> {
    let default = payload
        .attr("default")
        .and_then(ArchiveDefault::parse)
        .ok_or_else(|| bad_request("default must be always, never or roster"))?;
    let list = |name: &str| -> Result<Vec<String>, Refusal> {
        let Some(list) = payload.get_child(name, MAM) else {
            return Ok(Vec::new());
        };
        list.children()
            .filter(|c| c.is("jid", MAM))
            .map(|jid| {
                Jid::new(jid.text().trim())
                    .map(|jid| jid.to_bare().to_string())
                    .map_err(|_| jid_malformed())
            })
            .collect()
    };
    Ok(ArchivePrefs {
        default,
        always: list("always")?,
        never: list("never")?,
    })
}

impl MamModule {
    async fn query(
        &self,
        router: &Router,
        from: &Jid,
        owner: &BareJid,
        payload: &Element,
    ) -> IqOutcome {
        let mut request = match parse_query(owner, payload) {
            Ok(request) => request,
            Err(error) => return IqOutcome::Error(*error),
        };
        if let Err(error) = apply_prefs(router, owner, &mut request.query).await {
            return IqOutcome::Error(store_error(&error));
        }
        let page = match router.store.query_archive(&request.query).await {
            Ok(page) => page,
            Err(error) => return IqOutcome::Error(store_error(&error)),
        };
        let origin = from.try_as_full().ok().and_then(|f| router.sessions.get(f));
        if let Some(origin) = origin {
            let to = from.to_string();
            let ordered: Box<dyn Iterator<Item = &ArchivedMessage>> = if request.flip {
                Box::new(page.messages.iter().rev())
            } else {
                Box::new(page.messages.iter())
            };
            for message in ordered {
                if let Some(result) =
                    result_message(owner, &to, request.query_id.as_deref(), message)
                {
                    router.send(&origin, Stanza::new(result));
                }
            }
        }
        IqOutcome::Result(Some(fin(&page, request.flip)))
    }

    async fn prefs(
        &self,
        router: &Router,
        owner: &BareJid,
        iq: &Stanza,
        payload: &Element,
    ) -> IqOutcome {
        if iq.type_attr() == Some("set") {
            let prefs = match parse_prefs(payload) {
                Ok(prefs) => prefs,
                Err(error) => return IqOutcome::Error(*error),
            };
            if let Err(error) = router.store.set_archive_prefs(owner.as_str(), &prefs).await {
                return IqOutcome::Error(store_error(&error));
            }
        }
        match router.store.archive_prefs(owner.as_str()).await {
            Ok(prefs) => IqOutcome::Result(Some(prefs_element(&prefs))),
            Err(error) => IqOutcome::Error(store_error(&error)),
        }
    }
}

#[async_trait]
impl Module for MamModule {
    fn name(&self) -> &'static str {
        "mam"
    }

    fn account_features(&self) -> &'static [&'static str] {
        // XEP-0313 §7 (v1.1): a user archive is advertised on the account's bare JID.
        &[MAM, MAM_EXTENDED]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[MAM]
    }

    async fn handle_iq(&self, router: &Router, iq: &Stanza) -> IqOutcome {
        let (Some(from), Some(payload)) = (iq.from.as_ref(), iq.payload()) else {
            return StanzaErrorCondition::BadRequest.into();
        };
        let owner = from.to_bare();
        match &iq.to {
            None => {}
            Some(to) if to.to_bare() == owner && to.resource().is_none() => {}
            // The server itself keeps no archive of its own (no MUC or pubsub archives yet).
            Some(to) if router.is_server(to) => {
                return StanzaErrorCondition::ServiceUnavailable.into();
            }
            // XEP-0313 §4.1 (v1.1): only the owner may query a user archive.
            Some(_) => {
                return StanzaError::new(StanzaErrorCondition::Forbidden)
                    .with_text("only the owner may read an archive")
                    .into();
            }
        }
        match (payload.name(), iq.type_attr()) {
            ("query", Some("get")) => IqOutcome::Result(Some(query_form())),
            ("query", Some("set")) => self.query(router, from, &owner, payload).await,
            ("prefs", Some("get" | "set")) => self.prefs(router, &owner, iq, payload).await,
            _ => StanzaErrorCondition::FeatureNotImplemented.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> BareJid {
        BareJid::new("alice@example.org").expect("jid")
    }

    fn parse(xml: &str) -> Result<Request, Refusal> {
        parse_query(&owner(), &xml.parse().expect("xml"))
    }

    #[test]
    fn a_bare_query_pages_forward_from_the_start() {
        let request = parse("<query xmlns='urn:xmpp:mam:2' queryid='q'/>").expect("parse");
        assert_eq!(request.query_id.as_deref(), Some("q"));
        assert_eq!(request.query.owner, "alice@example.org");
        assert_eq!(request.query.limit, DEFAULT_QUERY_LIMIT);
        assert_eq!(request.query.page, Page::Forward);
        assert!(!request.query.count && !request.flip);
    }

    #[test]
    fn form_and_rsm_fill_the_query() {
        let request = parse(
            "<query xmlns='urn:xmpp:mam:2'>\
               <x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
                 <field var='with'><value>bob@example.org/phone</value></field>\
                 <field var='start'><value>2023-11-14T22:13:20Z</value></field>\
                 <field var='end'><value>2023-11-14T22:13:21.5+00:00</value></field>\
                 <field var='after-id'><value>a1</value></field>\
                 <field var='ids'><value>i1</value><value>i2</value></field>\
               </x>\
               <set xmlns='http://jabber.org/protocol/rsm'><max>1000</max><before/></set>\
               <flip-page/>\
             </query>",
        )
        .expect("parse");
        let query = request.query;
        assert_eq!(query.with.as_deref(), Some("bob@example.org"));
        assert_eq!(query.start_ms, Some(1_700_000_000_000));
        assert_eq!(query.end_ms, Some(1_700_000_001_500));
        assert_eq!(query.after_id.as_deref(), Some("a1"));
        assert_eq!(query.before_id, None);
        assert_eq!(query.ids, Some(vec!["i1".to_owned(), "i2".to_owned()]));
        assert_eq!(query.limit, MAX_QUERY_LIMIT);
        assert_eq!(query.page, Page::Backward);
        assert!(request.flip);

        let counting = parse(
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>0</max></set></query>",
        )
        .expect("parse");
        assert!(counting.query.count);
    }

    #[test]
    fn malformed_queries_are_bad_requests() {
        let cases = [
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x></query>",
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='colour'><value>red</value></field></x></query>",
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='start'><value>yesterday</value></field></x></query>",
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='end'><value>1</value><value>2</value></field></x></query>",
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>-1</max></set></query>",
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><after/></set></query>",
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='after-id'><value>a</value></field></x><set xmlns='http://jabber.org/protocol/rsm'><after>b</after></set></query>",
            "<query xmlns='urn:xmpp:mam:2'><surprise xmlns='urn:example'/></query>",
        ];
        for xml in cases {
            let error = parse(xml).expect_err(xml);
            assert_eq!(error.condition, StanzaErrorCondition::BadRequest, "{xml}");
        }
        let jid = parse(
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='with'><value>@@</value></field></x></query>",
        )
        .expect_err("bad jid");
        assert_eq!(jid.condition, StanzaErrorCondition::JidMalformed);
    }

    #[test]
    fn prefs_round_trip_through_xml() {
        let prefs = ArchivePrefs {
            default: ArchiveDefault::Roster,
            always: vec!["bob@example.org".into()],
            never: vec!["eve@example.org".into()],
        };
        assert_eq!(parse_prefs(&prefs_element(&prefs)).expect("parse"), prefs);
        let full = "<prefs xmlns='urn:xmpp:mam:2' default='never'><always><jid>bob@example.org/x</jid></always></prefs>";
        let parsed = parse_prefs(&full.parse().expect("xml")).expect("parse");
        assert_eq!(parsed.always, ["bob@example.org"]);
        assert!(
            parse_prefs(
                &"<prefs xmlns='urn:xmpp:mam:2' default='sometimes'/>"
                    .parse()
                    .expect("xml")
            )
            .is_err()
        );
    }
}
