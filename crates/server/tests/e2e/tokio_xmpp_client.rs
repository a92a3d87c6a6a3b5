//! Interoperability with an independent client library: tokio-xmpp 6.
//!
//! Two tokio-xmpp clients log in over the two transports the library offers for a server
//! like this one, and exchange messages both ways:
//!
//! - alice uses STARTTLS through [`SelfSignedStartTls`], a `ServerConnector` that does what
//!   the library's own `StartTlsServerConnector` does but trusts the server's self-signed
//!   certificate (the library's connector only trusts the system roots). Like the library it
//!   passes the TLS 1.3 exporter as channel binding, so tokio-xmpp looks for
//!   `SCRAM-*-PLUS`; Confab offers no `-PLUS` mechanism, so the library picks PLAIN over TLS.
//! - bob uses the library's plain TCP connector (feature `insecure-tcp`), without channel
//!   binding, so the library authenticates with SCRAM-SHA-256 from the `sasl` crate.

use crate::harness::{Server, insecure_tls_config, password};
use futures::{SinkExt as _, StreamExt as _};
use sasl::common::ChannelBinding;
use std::borrow::Cow;
use std::net::SocketAddr;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_xmpp::connect::{DnsConfig, ServerConnector};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message};
use tokio_xmpp::parsers::starttls;
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, PendingFeaturesRecv, ReadError, StreamHeader, Timeouts,
    XmppStreamElement, initiate_stream,
};
use tokio_xmpp::{Client, Event, Stanza};

/// STARTTLS to a fixed address, trusting any certificate.
#[derive(Debug, Clone)]
struct SelfSignedStartTls {
    addr: SocketAddr,
}

impl ServerConnector for SelfSignedStartTls {
    type Stream = BufStream<tokio_rustls::client::TlsStream<TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let header = || StreamHeader {
            to: Some(Cow::Owned(jid.domain().as_str().to_owned())),
            from: None,
            id: None,
        };
        let tcp = BufStream::new(TcpStream::connect(self.addr).await?);
        let pending = initiate_stream(tcp, ns, header(), timeouts).await?;
        let (features, mut stream) = pending.recv_features::<FallibleStreamElement>().await?;
        if !features.can_starttls() {
            return Err(tokio_xmpp::Error::Protocol(
                tokio_xmpp::error::ProtocolError::NoTls,
            ));
        }
        stream
            .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
                starttls::Request,
            )))
            .await?;
        loop {
            match stream
                .next()
                .await
                .map(|v| v.and_then(|v| v.into_read_error()))
            {
                Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_)))) => break,
                Some(Ok(_)) | Some(Err(ReadError::SoftTimeout)) => {}
                Some(Err(ReadError::HardError(e))) => return Err(e.into()),
                Some(Err(ReadError::ParseError(e))) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e).into());
                }
                None | Some(Err(ReadError::StreamFooterReceived)) => {
                    return Err(tokio_xmpp::Error::Disconnected);
                }
            }
        }
        let tcp = stream.into_inner().into_inner();
        let name = rustls::pki_types::ServerName::try_from(jid.domain().as_str().to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tls = tokio_rustls::TlsConnector::from(insecure_tls_config())
            .connect(name, tcp)
            .await?;
        // The channel binding tokio-xmpp itself would derive (RFC 9266 tls-exporter).
        let binding = match tls.get_ref().1.export_keying_material(
            vec![0u8; 32],
            b"EXPORTER-Channel-Binding",
            None,
        ) {
            Ok(data) => ChannelBinding::TlsExporter(data),
            Err(_) => ChannelBinding::None,
        };
        let pending = initiate_stream(BufStream::new(tls), ns, header(), timeouts).await?;
        Ok((pending, binding))
    }
}

/// Polls `client` until it is online; returns the bound JID.
async fn online(client: &mut Client, who: &str) -> Jid {
    let wait = async {
        loop {
            match client.next().await {
                Some(Event::Online { bound_jid, .. }) => return bound_jid,
                Some(Event::Disconnected(error)) => panic!("{who} disconnected: {error}"),
                Some(Event::Stanza(_)) => {}
                None => panic!("{who}'s client stopped"),
            }
        }
    };
    tokio::time::timeout(crate::harness::STEP, wait)
        .await
        .unwrap_or_else(|_| panic!("{who} did not come online"))
}

/// Polls `client` until a message with a body arrives; returns (from, body).
async fn next_message(client: &mut Client, who: &str) -> (Option<Jid>, String) {
    let wait = async {
        loop {
            match client.next().await {
                Some(Event::Stanza(Stanza::Message(message))) => {
                    if let Some((_, body)) = message.get_best_body(vec![]) {
                        return (message.from.clone(), body.clone());
                    }
                }
                Some(Event::Disconnected(error)) => panic!("{who} disconnected: {error}"),
                Some(_) => {}
                None => panic!("{who}'s client stopped"),
            }
        }
    };
    tokio::time::timeout(crate::harness::STEP, wait)
        .await
        .unwrap_or_else(|_| panic!("{who} received no message"))
}

fn chat(to: &str, body: &str) -> Stanza {
    let to = Jid::new(to).expect("valid JID");
    Message::chat(Some(to))
        .with_body(Lang::default(), body.to_owned())
        .into()
}

#[tokio::test]
async fn tokio_xmpp_clients_log_in_and_exchange_messages() {
    let server = Server::start(&[], &[]).await;
    let alice_jid = BareJid::new("alice@localhost").expect("JID");
    let bob_jid = BareJid::new("bob@localhost").expect("JID");

    let mut alice = Client::new_with_connector(
        alice_jid,
        password("alice"),
        SelfSignedStartTls { addr: server.c2s },
        Timeouts::default(),
    );
    let mut bob = Client::new_plaintext(
        bob_jid,
        password("bob"),
        DnsConfig::Addr {
            addr: server.c2s.to_string(),
        },
        Timeouts::default(),
    );
    let alice_full = online(&mut alice, "alice").await;
    let bob_full = online(&mut bob, "bob").await;
    assert_eq!(alice_full.to_bare().as_str(), "alice@localhost");
    assert_eq!(bob_full.to_bare().as_str(), "bob@localhost");

    // Initial presence makes both available for bare-JID messages.
    for client in [&mut alice, &mut bob] {
        client
            .send_stanza(tokio_xmpp::parsers::presence::Presence::available().into())
            .await
            .expect("send presence");
    }

    // Full JIDs first (independent of presence), then bare JIDs.
    alice
        .send_stanza(chat(bob_full.as_str(), "hello over plain TCP"))
        .await
        .expect("alice sends");
    let (from, body) = next_message(&mut bob, "bob").await;
    assert_eq!(body, "hello over plain TCP");
    assert_eq!(from.as_ref(), Some(&alice_full));

    bob.send_stanza(chat("alice@localhost", "hello over STARTTLS"))
        .await
        .expect("bob sends");
    let (from, body) = next_message(&mut alice, "alice").await;
    assert_eq!(body, "hello over STARTTLS");
    assert_eq!(from.as_ref(), Some(&bob_full));

    alice.send_end().await.expect("alice closes");
    bob.send_end().await.expect("bob closes");
}
