//! XML stream codec: bytes to stanzas with size/depth limits, and stanzas back to bytes; sans-IO.
