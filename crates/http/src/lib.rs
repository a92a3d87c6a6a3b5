//! HTTP listener: health, metrics and (later) the client and open-platform APIs.
