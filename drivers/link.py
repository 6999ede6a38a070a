"""A :class:`Link`: a transport with driver errors, deadline-bounded reconnects and retries of
idempotent queries, and :class:`SessionLifecycle`, the ``connect``/``close`` of a driver that
talks through one. The SCPI rules (:class:`apt_daq.drivers.scpi.ScpiSession`) and the line
protocol's (:class:`apt_daq.drivers.serial_line.LineSession`) are built on it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from apt_daq.drivers.clock import Clock, WallClock
from apt_daq.drivers.errors import (
    BadReply,
    ConnectionLost,
    DriverError,
    DriverTimeout,
    SafetyError,
)
from apt_daq.drivers.transports import ReplyTooLong, Transport

from apt_daq.wire.scpi_commands import fmt_number

T = TypeVar("T")
log = logging.getLogger("apt_daq.drivers")


class Link:
    """A transport with driver errors, deadline-bounded reconnects and retries of idempotent
    queries.

    After any failure mid-exchange the link is marked ``broken`` (a reply may still be in
    flight); the next exchange first reconnects and then calls ``on_reconnect`` (the driver's
    handshake: identity, limit, state). Reconnecting is a loop, never a recursion: an exchange
    made by the handshake itself does not reconnect again, and the loop gives up at
    ``reconnect_deadline_s`` (wall time: link timeouts are wall time) after it began.

    :meth:`send_now` is the safe-off path: the command goes out as the first bytes on the
    link (a fresh connection if the old one is broken), with no handshake before it.
    """

    def __init__(self, transport: Transport, name: str, *, retries: int = 2,
                 reconnect_deadline_s: float = 10.0, clock: Clock | None = None,
                 on_reconnect: Callable[[], None] | None = None):
        self.transport = transport
        self.name = name
        self.retries = retries
        if not reconnect_deadline_s > 0:
            raise ValueError("reconnect_deadline_s must be > 0")
        self.reconnect_deadline_s = float(reconnect_deadline_s)
        self.clock = clock or WallClock()
        self.on_reconnect = on_reconnect
        self.broken = False
        self.is_open = False
        self.needs_handshake = False  # opened by send_now: state not re-read yet
        self.reconnects = 0  # total, for logs and tests
        self.opens = 0  # transport opens after the first, for logs and tests
        self.last_io = time.monotonic()  # when a command last went out (the keepalive's clock)
        self._in_handshake = False

    def open(self) -> None:
        try:
            self.transport.open()
        except (ConnectionError, OSError, TimeoutError) as e:
            raise ConnectionLost(self.name, None, f"cannot connect: {e}") from e
        self.is_open = True
        self.broken = False
        self.needs_handshake = False

    def close(self) -> None:
        self.is_open = False
        self.transport.close()

    def _reopen(self, deadline: float, why: str) -> None:
        """Close and open the transport until it opens or ``deadline`` (time.monotonic)."""
        attempt = 0
        while True:
            self.transport.close()
            self.opens += 1
            try:
                self.transport.open()
            except (ConnectionError, OSError, TimeoutError) as e:
                wait = min(0.05 * 2**attempt, 1.0)
                if time.monotonic() + wait >= deadline:
                    self.broken = True
                    raise ConnectionLost(self.name, None, f"{why}: no connection within "
                                         f"reconnect_deadline_s {self.reconnect_deadline_s:g}"
                                         f" ({e})") from e
                time.sleep(wait)
                attempt += 1
                continue
            self.is_open = True
            self.broken = False
            self.needs_handshake = self.on_reconnect is not None
            return

    def reconnect(self) -> None:
        """Reopen the link and run the handshake, retried until ``reconnect_deadline_s``."""
        deadline = time.monotonic() + self.reconnect_deadline_s
        attempt = 0
        while True:
            if self.broken or not self.is_open:
                self._reopen(deadline, "gave up reconnecting")
            try:
                self.handshake()
            except DriverError as e:
                self.broken = True
                wait = min(0.05 * 2**attempt, 1.0)
                if time.monotonic() + wait >= deadline:
                    raise ConnectionLost(
                        self.name, None, f"gave up reconnecting after reconnect_deadline_s "
                        f"{self.reconnect_deadline_s:g}: the handshake failed: {e}") from e
                time.sleep(wait)
                attempt += 1
                continue
            self.reconnects += 1
            return

    def handshake(self) -> None:
        """Run ``on_reconnect`` (the driver's handshake) with reconnects suspended."""
        if self.on_reconnect is None:
            self.needs_handshake = False
            return
        self._in_handshake = True
        try:
            self.on_reconnect()
        finally:
            self._in_handshake = False
        self.needs_handshake = False

    def ensure(self) -> None:
        """Reconnect (and re-run the handshake) first if the link is broken or was reopened
        without one. Inside the handshake the link is used as it is (no recursion)."""
        if not self.is_open:
            raise ConnectionLost(self.name, None, "not connected (call connect() or open_*())")
        if self._in_handshake:
            if self.broken:
                raise ConnectionLost(self.name, None, "link lost during the handshake")
            return
        if self.broken or self.needs_handshake:
            self.reconnect()

    def exchange(self, command: str, reply: bool) -> str | None:
        """Write ``command``; read one reply line if ``reply``. One attempt, errors mapped."""
        self.ensure()
        return self._raw_exchange(command, reply)

    @property
    def sound(self) -> bool:
        """Open, not broken and handshaken: an exchange needs no reconnect first."""
        return self.is_open and not self.broken and not self.needs_handshake

    def _raw_exchange(self, command: str, reply: bool) -> str | None:
        self.last_io = time.monotonic()
        try:
            self.transport.write(command)
            return self.transport.read() if reply else None
        except TimeoutError as e:
            self.broken = True
            raise DriverTimeout(self.name, command, f"no reply ({e})") from e
        except ReplyTooLong as e:
            self.broken = True
            raise BadReply(self.name, command, str(e), e.head) from e
        except (ConnectionError, OSError) as e:
            self.broken = True
            raise ConnectionLost(self.name, command, f"link lost: {e}") from e
        except BaseException:  # Ctrl-C mid-exchange: a reply may be pending, resync next time
            self.broken = True
            raise

    def send_now(self, command: str, reply: bool = False) -> None:
        """Send ``command`` as the first bytes on the link: on the open link if it is sound,
        else on a fresh connection with NO handshake before it (the safe-off path: nothing
        the instrument says can hold the command back). Retried on a fresh connection until
        ``reconnect_deadline_s``. With ``reply`` one line is read and discarded (a garbled or
        missing reply only marks the link broken: the command went out; verify separately).
        """
        if not self.is_open:
            raise ConnectionLost(self.name, command, "not connected")
        deadline = time.monotonic() + self.reconnect_deadline_s
        while True:
            if self.broken:
                self._reopen(deadline, f"could not send {command!r}")
            self.last_io = time.monotonic()
            try:
                self.transport.write(command)
            except (ConnectionError, OSError, TimeoutError) as e:
                self.broken = True
                if time.monotonic() >= deadline:
                    raise ConnectionLost(self.name, command, f"link lost: {e}") from e
                continue
            except BaseException:
                self.broken = True
                raise
            break
        if reply:
            try:
                self.transport.read()
            except (ConnectionError, OSError, TimeoutError, ReplyTooLong):
                self.broken = True

    def ask_now(self, command: str, parse: Callable[[str], T]) -> T:
        """One query on the link as it is (reopened without handshake if broken): verifying
        a safe-off must not depend on the instrument passing its handshake."""
        if not self.is_open:
            raise ConnectionLost(self.name, command, "not connected")
        if self.broken:
            self._reopen(time.monotonic() + self.reconnect_deadline_s,
                         f"could not send {command!r}")
        text = self._raw_exchange(command, True)
        assert text is not None
        try:
            return parse(text)
        except ValueError as e:
            self.broken = True
            raise BadReply(self.name, command, f"unexpected reply: {e}", text) from e

    def query(self, command: str, parse: Callable[[str], T], *, idempotent: bool = True) -> T:
        """Ask and parse; idempotent queries are retried ``retries`` times on a fresh link
        (not inside the handshake, whose caller retries the whole handshake)."""
        attempts = 1 + (self.retries if idempotent and not self._in_handshake else 0)
        for i in range(attempts):
            self.ensure()  # a reconnect that gives up is final: it had its own deadline
            try:
                text = self._raw_exchange(command, True)
                assert text is not None
                try:
                    return parse(text)
                except ValueError as e:
                    self.check_reply_error(command, text)
                    self.broken = True
                    raise BadReply(self.name, command, f"unexpected reply: {e}", text) from e
            except (DriverTimeout, ConnectionLost, BadReply):
                if i == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def check_reply_error(self, command: str, text: str) -> None:
        """Hook: line protocols that answer errors inline raise InstrumentError here."""


class Keepalive:
    """Feeds an instrument's link watchdog while its driver is idle.

    The instrument, armed by the driver's handshake (``SYST:COMM:WATC <s>``, line protocol
    ``W <s>``), turns its output off when no command arrives for ``watchdog_s``: that is what
    turns HV and the laser off when the controlling process is killed, hangs up or loses its
    cable. While the process lives, this daemon thread sends ``query`` whenever the link has
    been quiet for a quarter of the timeout, so a paused run or an idle script keeps its
    output. It talks only on a sound link and only when it gets the driver's lock at once
    (a caller holding it is talking); it never reconnects (the next call of the driver
    does), and an error only leaves the link marked broken.
    """

    def __init__(self, session: Link, lock: Any, query: str, watchdog_s: float):
        self.session, self.lock, self.query = session, lock, query
        self.period_s = watchdog_s / 4.0
        self.sent = 0  # keepalive queries sent, for tests and logs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"keepalive {session.name}")

    def start(self) -> Keepalive:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s / 2.0):
            if time.monotonic() - self.session.last_io < self.period_s:
                continue
            if not self.lock.acquire(blocking=False):
                continue
            try:
                if self.session.sound and not self._stop.is_set():
                    self.session._raw_exchange(self.query, True)
                    self.sent += 1
            except DriverError as e:
                log.debug("%s: keepalive failed: %s", self.session.name, e)
            finally:
                self.lock.release()


class SessionLifecycle:
    """``connect``/``close`` of a driver that talks through a :class:`Link` session (``self.
    session``) and re-runs ``self._handshake`` after every reconnect. Mixed in before the
    instrument interface, which supplies ``lock`` and ``connected``.

    With ``watchdog_s`` > 0 the driver's handshake arms the instrument's link watchdog
    (``_arm_watchdog``) and a :class:`Keepalive` runs while connected."""

    session: Link
    lock: Any
    connected: bool
    error: Callable[..., DriverError]
    watchdog_s: float = 0.0
    _keepalive: Keepalive | None = None

    def _handshake(self) -> None:
        raise NotImplementedError

    def _watchdog_commands(self) -> tuple[str, str] | None:
        """(arm with ``{}`` for the seconds, the query that feeds it), or None if the command
        set has no watchdog."""
        return None

    def _arm_watchdog(self) -> None:
        """Arm the instrument's link watchdog (from the handshake; a setting, so an
        instrument without the command fails the connect with its error)."""
        if self.watchdog_s <= 0:
            return
        cmds = self._watchdog_commands()
        if cmds is None:
            raise self.error(SafetyError, None, "watchdog_s: this command set has no link "
                             "watchdog")
        self.session.write(cmds[0].format(fmt_number(self.watchdog_s)))  # type: ignore[attr-defined]

    def connect(self) -> None:
        """Open the link and run the handshake. If the handshake fails after the link opened
        (no or garbage identification, a timeout, a refused setting), the handshake-free off
        goes out on the link before it closes (:meth:`_off_after_failed_connect`): the
        driver is not connected, so no later ``safe_off`` would reach the instrument."""
        with self.lock:
            self.session.open()
            try:
                self.session.handshake()
            except BaseException as e:
                try:
                    self._off_after_failed_connect(e)
                finally:
                    self.session.close()
                raise
            self.connected = True
            cmds = self._watchdog_commands()
            if self.watchdog_s > 0 and cmds is not None and self._keepalive is None:
                self._keepalive = Keepalive(self.session, self.lock, cmds[1],
                                            self.watchdog_s).start()

    def _off_after_failed_connect(self, cause: BaseException) -> None:
        """The link opened but the handshake failed: the instrument may be on (an earlier
        run or a script left it so) and its replies cannot be trusted. Send its
        handshake-free off (``_send_off_now``: HV ``OUTP OFF`` / line ``O 0``, laser
        ``OUTP OFF``) as :meth:`Link.send_now` does, on the open link or, if the failure
        broke it, a fresh connection, within ``reconnect_deadline_s``. Not read back (an
        instrument that fails its handshake is not believed either way). Best effort: the
        handshake's failure is the error raised; an off that could not be sent is logged and
        added to it as a note."""
        send_off = getattr(self, "_send_off_now", None)
        if send_off is None:  # nothing to switch off (a detector)
            return
        name = getattr(self, "name", self.session.name)
        try:
            send_off()
        except Exception as e:
            log.error("%s: connect failed (%s) and the off command could not be sent: %s",
                      name, cause, e)
            cause.add_note(f"{name}: the off command could not be sent after the failed "
                           f"connect: {e}")
        else:
            log.info("%s: connect failed (%s): off command sent", name, cause)

    def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.stop()
            self._keepalive = None
        with self.lock:
            self.connected = False
            self.session.close()

    def _query(self, command: str, parse: Callable[[str], T]) -> T:
        """One query under the driver's lock (reconnecting as the link's rules allow)."""
        with self.lock:
            return self.session.query(command, parse, idempotent=True)

    def _mark_broken(self) -> None:
        self.session.broken = True
