"""What the Python drivers share: how much they produce and how long they wait to read it."""

import time

# Records per codec: small, so the captured Fetch responses stay small.
MESSAGES_PER_CODEC = 3
# A consumer that has not read everything by then is stuck (a group that never settles).
CONSUME_DEADLINE_SECONDS = 60


def consume_all(poll_count, wanted):
    """Calls `poll_count()` (one poll, returning how many records it got) until `wanted`
    records were read, or fails after CONSUME_DEADLINE_SECONDS."""
    got = 0
    deadline = time.monotonic() + CONSUME_DEADLINE_SECONDS
    while got < wanted:
        if time.monotonic() > deadline:
            raise RuntimeError(f"consumed {got} of {wanted} messages")
        got += poll_count()
