"""The loop's wait: ended by set(), by its deadline, and by a signal landing
on any thread (through signal.set_wakeup_fd)."""

from __future__ import annotations

import signal
import threading
import time

from puller.node.wakeup import Wakeup


def test_set_from_another_thread_ends_the_wait_and_clear_rearms_it():
    check_set_and_clear(Wakeup())  # an event alone: no descriptor asked for
    wakeup = Wakeup()
    wakeup.signal_fd()
    check_set_and_clear(wakeup)


def check_set_and_clear(wakeup: Wakeup) -> None:
    try:
        threading.Timer(0.1, wakeup.set).start()
        started = time.monotonic()
        assert wakeup.wait(10) is True and time.monotonic() - started < 5
        assert wakeup.wait(0) is True  # stays set until cleared
        wakeup.clear()
        started = time.monotonic()
        assert wakeup.wait(0.2) is False and time.monotonic() - started >= 0.19
    finally:
        wakeup.close()
    wakeup.close()  # idempotent
    wakeup.set()  # a late wake-up after close is harmless


def test_a_signal_delivered_to_another_thread_ends_the_wait_at_once():
    wakeup, received = Wakeup(), []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    old_fd = signal.set_wakeup_fd(wakeup.signal_fd(), warn_on_full_buffer=False)
    try:
        worker = threading.Thread(
            target=lambda: (time.sleep(0.1), signal.pthread_kill(threading.get_ident(),
                                                                  signal.SIGUSR1)))
        worker.start()
        started = time.monotonic()
        woken = wakeup.wait(10)
        took = time.monotonic() - started
        worker.join()
        assert woken is False and took < 5  # not set: only the wait ended
        assert received == [signal.SIGUSR1]  # the handler ran on this thread
        started = time.monotonic()
        assert wakeup.wait(0.2) is False and time.monotonic() - started >= 0.19
    finally:
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGUSR1, previous)
        wakeup.close()
