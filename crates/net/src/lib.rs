//! Network listeners: TCP, STARTTLS upgrade, connection limits and descriptor exhaustion handling.
