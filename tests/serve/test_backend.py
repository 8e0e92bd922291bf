"""The pieces between HTTP and the engine: events cross threads in order and in few wake-ups."""

from __future__ import annotations

import asyncio
import threading

from skillsoup.serve.backend import EventStream, mailbox
from skillsoup.serve.events import Done, Piece


def test_events_from_another_thread_arrive_in_order_and_share_wake_ups():
    async def main():
        loop = asyncio.get_running_loop()
        streams = [EventStream(loop) for _ in range(4)]
        wakeups = []
        box = mailbox(loop)
        real = box._deliver
        box._deliver = lambda: (wakeups.append(1), real())
        assert all(s._mailbox is box for s in streams)  # one mailbox per loop

        def engine():  # a step emits one piece per row, 50 steps, then every row ends
            for step in range(50):
                for i, s in enumerate(streams):
                    s.emit(Piece(f"{i}:{step} "))
            for s in streams:
                s.emit(Done("stop", 1, 50, {}))

        thread = threading.Thread(target=engine)
        thread.start()
        thread.join()  # the loop is busy meanwhile (as it is serving HTTP): the events wait in the mailbox
        texts = ["".join([e.text async for e in s if isinstance(e, Piece)]) for s in streams]
        return texts, len(wakeups)

    texts, wakeups = asyncio.run(main())
    assert texts == ["".join(f"{i}:{step} " for step in range(50)) for i in range(4)]
    assert wakeups == 1  # 204 events posted while one delivery was pending rode along with it
