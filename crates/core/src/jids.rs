//! JID helpers for the per-stanza path. `jid`'s `to_bare` builds the new string with
//! `format!`, about a thousand instructions, and a message took ten of them (callgrind,
//! BENCHMARKS.md); the bare part is a prefix of the normalized string, so it can be sliced,
//! compared or copied instead.

use jid::{BareJid, Jid};

/// The bare JID of `jid`: a copy of its string cut before the resource.
pub fn bare(jid: &Jid) -> BareJid {
    jid.clone().into_bare()
}

/// The bare part of `jid` as text (`node@domain` or `domain`), without allocating. Neither a
/// node nor a domain can contain `/` (RFC 7622 §3.2, §3.3), so the first one starts the
/// resource.
pub fn bare_str(jid: &Jid) -> &str {
    let text = jid.as_str();
    text.split_once('/').map_or(text, |(bare, _)| bare)
}

/// Whether two JIDs name the same account or domain, whatever their resources.
pub fn same_bare(a: &Jid, b: &Jid) -> bool {
    bare_str(a) == bare_str(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(text: &str) -> Jid {
        Jid::new(text).expect("valid JID")
    }

    #[test]
    fn bare_parts_agree_with_to_bare() {
        for text in [
            "alice@example.org",
            "alice@example.org/phone",
            "alice@example.org/a/b@c",
            "example.org",
            "example.org/resource/with/slashes",
            "Ω@Example.ORG/Desk",
        ] {
            let jid = jid(text);
            assert_eq!(bare(&jid), jid.to_bare(), "{text}");
            assert_eq!(bare_str(&jid), jid.to_bare().as_str(), "{text}");
        }
    }

    #[test]
    fn same_bare_ignores_only_the_resource() {
        assert!(same_bare(&jid("a@x/1"), &jid("a@x/2")));
        assert!(same_bare(&jid("a@x"), &jid("a@x/2")));
        assert!(!same_bare(&jid("a@x/1"), &jid("b@x/1")));
        assert!(!same_bare(&jid("a@x/1"), &jid("a@y/1")));
        assert!(!same_bare(&jid("x/a@x"), &jid("a@x")));
    }
}
