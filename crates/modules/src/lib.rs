//! Features plugged into the router's hooks: roster, presence, offline, disco, ping, version, private storage, vCard, blocking, registration.
