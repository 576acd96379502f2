"""Advanced mode: the listener that turns one-time passwords into kernel-held grants."""
