"""Fleet mode: nodes that share advanced-mode grants and one replay cache through Redis.

    keys.py     the fleet key and the Redis credentials: root-only files under DIR/etc
    message.py  a grant as a fleet message, signed with HMAC-SHA256 under the fleet key (pure)
    store.py    what awp keeps in Redis and the few commands that read and write it
    node.py     the listener's fleet client: the replay claim, the publisher and consumer
                threads, catch-up, degradation and reconcile

Redis holds no secret and nothing that opens a door by itself: a node applies only a message
whose MAC verifies under the fleet key. See awp(8), FLEET.
"""
