-- Prosody configuration for bench/compare.sh, profile "minimal" (roster, disco, offline,
-- ping). compare.sh replaces @PORT@ and @DIR@ (the run's directory) before starting it.
--
-- High-load settings, chosen to be fair to Prosody:
-- - network_backend = "epoll" (the libevent-free epoll loop, Prosody's fastest);
-- - no mod_limits and no `limits` table: no read-rate limits on c2s;
-- - passwords stored as SCRAM-SHA-256 (internal_hashed, password_hash = "SHA-256"), so a
--   SCRAM login costs the server no PBKDF2, as with Confab and ejabberd;
-- - plain TCP on loopback allowed (no c2s_require_encryption); in-band registration open
--   (loopback is on Prosody's registration allowlist, so there is no throttle) so that
--   `confab-bench register` can create the accounts;
-- - no s2s, HTTP, component or admin listeners (they would take default ports);
-- - logging at warning level only.
daemonize = false
pidfile = "@DIR@/prosody.pid"
data_path = "@DIR@/data"
log = { warn = "@DIR@/prosody.log" }
network_backend = "epoll"
-- The listen backlog (default 128) as large as the kernel allows here, like the others.
network_settings = { tcp_backlog = 4096 }

c2s_ports = { @PORT@ }
c2s_interfaces = { "127.0.0.1" }
c2s_direct_tls_ports = { }
legacy_ssl_ports = { }
s2s_ports = { }
http_ports = { }
https_ports = { }
component_ports = { }

c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
allow_registration = true
authentication = "internal_hashed"
password_hash = "SHA-256"

modules_enabled = {
	"roster"; "saslauth"; "disco"; "offline"; "ping"; "register";
}
modules_disabled = { "s2s"; "admin_shell"; "limits"; "tombstones" }

VirtualHost "localhost"

-- `group` scenario: XEP-0045 rooms at conference.localhost. Prosody 0.12's MUC has no
-- occupant limit and no message rate limit (mod_muc_limits is a community module, not
-- loaded); rooms are members-only and persistent by default, as the bench also asks in its
-- owner form, and room creation is open to local users. History is kept (20 messages, the
-- default); the bench asks for none on join. No MUC archive (muc_mam is not loaded).
Component "conference.localhost" "muc"
	restrict_room_creation = false
	muc_room_default_members_only = true
	muc_room_default_persistent = true
	muc_tombstones = false
