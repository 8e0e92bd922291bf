"""The pieces between HTTP and the engine: events cross threads in order and in few wake-ups."""

from __future__ import annotations

import asyncio
import threading

from skillsoup.serve.backend import EventStream, mailbox
from skillsoup.serve.events import Done, Failed, Piece


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
        async def text(s):
            return "".join([e.text async for e in s if isinstance(e, Piece)])
        texts = [await asyncio.wait_for(text(s), 5) for s in streams]  # a lost end fails, not hangs
        return texts, len(wakeups)

    texts, wakeups = asyncio.run(main())
    assert texts == ["".join(f"{i}:{step} " for step in range(50)) for i in range(4)]
    assert wakeups == 1  # 204 events posted while one delivery was pending rode along with it


def test_pieces_waiting_together_are_read_as_one_and_nothing_after_them_is_lost():
    async def read(stream):  # a lost end would hang: fail instead
        async def all_events():
            return [e async for e in stream]
        return await asyncio.wait_for(all_events(), 5)

    async def main():
        loop = asyncio.get_running_loop()
        busy, slow, left = EventStream(loop), EventStream(loop), EventStream(loop)
        for s in (busy, left):  # a reader behind the engine: three pieces wait, then the end
            for text in ("a", "b", "c"):
                s.emit(Piece(text))
        busy.emit(Done("stop", 1, 3, {}))
        await asyncio.sleep(0)  # the mailbox delivers
        left.cancel()  # the client left with pieces still queued: the reader still ends
        events = await read(busy)
        assert [type(e) for e in events] == [Piece, Done] and events[0].text == "abc"
        assert [e.text for e in await read(left)] == ["abc"]
        # a reader keeping up gets each piece as it comes
        pieces = []

        async def reader():
            async for e in slow:
                pieces.append(e)

        task = asyncio.create_task(reader())
        for text in ("x", "y"):
            slow.emit(Piece(text))
            await asyncio.sleep(0.01)
        slow.emit(Failed("timeout", "late"))
        await asyncio.wait_for(task, 5)
        assert [getattr(e, "text", e.kind) for e in pieces] == ["x", "y", "failed"]

    asyncio.run(main())
