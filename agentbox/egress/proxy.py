"""The egress proxy: HTTP CONNECT tunnels and absolute-form plain HTTP, one upstream
connection per client connection, every connection judged against the live policy.

The proxy resolves names itself and connects to exactly the address it judged, so nothing
can re-point a name between the check and the connection. A policy swap applies to the next
connection at once and closes open ones the new policy forbids. Every connection, however
it ends, leaves one ConnectionRecord in the decision log. A SOCKS client is refused at
once in its own protocol (request.SocksRefused) rather than left waiting for an HTTP head.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from agentbox.egress.approvals import RULE_ONCE, ApprovalBroker, ApprovalResult, ApprovalVerdict
from agentbox.egress.budget import RULE_BUDGET, EgressBudget
from agentbox.egress.policy import Decision, decide, ip_literal, prejudge
from agentbox.egress.records import ConnectionRecord, DecisionLog, Outcome
from agentbox.egress.relay import answer, relay
from agentbox.egress.request import ProxyRequest, RequestError, SocksRefused, error_response, origin_head, \
    read_head, read_request, response_head
from agentbox.egress.sockets import BoundSocket, bind_unix_socket
from agentbox.errors import EgressError
from agentbox.model.network import AllowEntry, EntryKind, IPAddress, NetworkPolicy, normalise_host

log = logging.getLogger(__name__)

RULE_POLICY = "approval:policy"  # a hold ended by a policy change: judge again under it
_MAX_RESPONSE_HEAD = 64 * 1024  # read_head's cap on a response head in all
# The origin's reader also buffers the download: it pauses reading at twice its limit, and
# 2 × 64 KiB between two sockets cost throughput. A longer line than the head's cap still fails.
_UPSTREAM_READ_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class ProxyLimits:
    max_header_bytes: int = 16 * 1024  # request head; larger gets 431
    header_timeout: float = 10.0  # seconds to send the whole request head; slower gets 408
    max_connections: int = 256  # concurrent client connections; more get 503
    connect_timeout: float = 10.0  # per name lookup, and per upstream connection attempt


class Resolver(Protocol):
    async def __call__(self, *, host: str, port: int) -> Sequence[IPAddress]: ...


class Connector(Protocol):
    async def __call__(
        self, *, address: IPAddress, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...


async def system_resolver(*, host: str, port: int) -> tuple[IPAddress, ...]:
    """The host's resolver, through the event loop's getaddrinfo; addresses in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return tuple(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


async def direct_connector(*, address: IPAddress, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(str(address), port, limit=_UPSTREAM_READ_LIMIT)


class _Refused(Exception):
    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


class _Failed(Exception):
    def __init__(self, outcome: Outcome, status: int, message: str) -> None:
        super().__init__(message)
        self.outcome, self.status, self.message = outcome, status, message


class _Connection:
    """One client connection's state while it lives; `record()` is its log entry."""

    budget: EgressBudget | None = None  # the proxy's, counted as the bytes flow

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.started = time.monotonic()
        self.time = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.host, self.address, self.port, self.method = "", "", 0, ""
        self.decision = Decision(False, "none", "no request received")
        self.outcome = Outcome.DENIED
        self.error = ""
        self.up = self.down = 0
        self.approved_once = False

    def count_up(self, n: int) -> None:
        self.up += n
        if self.budget is not None:
            self.budget.add(n)

    def count_down(self, n: int) -> None:
        self.down += n
        if self.budget is not None:
            self.budget.add(n)

    def cut(self, *, why: str) -> None:
        self.outcome, self.error = Outcome.CUT, why
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()

    def record(self) -> ConnectionRecord:
        return ConnectionRecord(
            time=self.time, host=self.host, address=self.address, port=self.port, method=self.method,
            decision=self.decision, outcome=self.outcome, bytes_up=self.up, bytes_down=self.down,
            duration_s=round(time.monotonic() - self.started, 3), error=self.error,
        )


class EgressProxy:
    def __init__(
        self,
        *,
        policy: NetworkPolicy,
        resolver: Resolver = system_resolver,
        connector: Connector = direct_connector,
        limits: ProxyLimits = ProxyLimits(),
        decisions: DecisionLog | None = None,
        approvals: ApprovalBroker | None = None,
        pinned_hosts: Mapping[str, IPAddress] | None = None,
        budget: EgressBudget | None = None,
    ) -> None:
        self._policy = policy
        self.budget = budget
        if budget is not None:
            budget.on_exceeded = self._cut_for_budget
        # Names the proxy never looks up: it takes them as this address (like /etc/hosts). The
        # user wrote the address down, so an entry for the name may unlock it even when it is
        # loopback or private (policy.decide's `pinned`). Logged as asked.
        self._pinned = {normalise_host(host=name): address for name, address in (pinned_hosts or {}).items()}
        self._resolve = resolver
        self._connect = connector
        self.limits = limits
        self.decisions = decisions or DecisionLog()
        self.approvals = approvals or ApprovalBroker()
        self._listeners: list[Callable[[NetworkPolicy], None]] = []
        self._servers: list[asyncio.Server] = []
        self._bound: BoundSocket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._relaying: set[_Connection] = set()
        self.tcp_port: int | None = None

    @property
    def policy(self) -> NetworkPolicy:
        return self._policy

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    def add_policy_listener(self, *, listener: Callable[[NetworkPolicy], None]) -> None:
        """Called with every new policy (control requests and `allow_always` answers)."""
        self._listeners.append(listener)

    def set_policy(self, *, policy: NetworkPolicy) -> int:
        """Swap the live policy; close what it forbids. Returns how many connections were cut.
        Call it on the proxy's event loop (the control server does)."""
        self._policy = policy
        for listener in list(self._listeners):
            try:
                listener(policy)
            except Exception:
                log.exception("policy listener failed")
        cut = 0
        for conn in list(self._relaying):
            verdict = self._verdict_for(conn)
            if verdict is not None:
                conn.cut(why=f"policy changed: {verdict.rule}: {verdict.reason}")
                cut += 1
        for request in self.approvals.pending():
            self._resettle(request.id, host=request.host, address=request.address, port=request.port)
        return cut

    def _cut_for_budget(self, why: str) -> None:
        """The budget tripped (while relaying): every live connection ends here and now."""
        for conn in list(self._relaying):
            conn.cut(why=f"{RULE_BUDGET}: {why}")

    async def start(self, *, unix_path: Path | None = None, tcp_port: int | None = None) -> None:
        """Listen on an owner-only Unix socket and/or 127.0.0.1:`tcp_port` (0: any free port)."""
        if unix_path is None and tcp_port is None:
            raise EgressError("the proxy needs a Unix socket path or a TCP port to listen on")
        limit = self.limits.max_header_bytes
        if unix_path is not None:
            self._bound = bind_unix_socket(path=unix_path)
            self._servers.append(await asyncio.start_unix_server(self._serve, sock=self._bound.sock, limit=limit))
        if tcp_port is not None:
            server = await asyncio.start_server(self._serve, "127.0.0.1", tcp_port, limit=limit)
            self.tcp_port = server.sockets[0].getsockname()[1]
            self._servers.append(server)

    async def close(self) -> None:
        """Stop listening, cut open connections, deny pending approvals, remove the socket."""
        for server in self._servers:
            server.close()
        for conn in list(self._relaying):
            conn.cut(why="the proxy is shutting down")
        for request in self.approvals.pending():
            self.approvals.settle(request_id=request.id, result=ApprovalResult(
                ApprovalVerdict.DENY, "shutdown", "the proxy is shutting down"))
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._bound is not None:
            self._bound.remove()
            self._bound = None

    async def __aenter__(self) -> EgressProxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- one client connection -------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = _Connection(writer)
        try:
            await self._exchange(conn, reader, writer)
        except asyncio.CancelledError:
            if conn.outcome is not Outcome.CUT:
                conn.outcome, conn.error = Outcome.CUT, "the proxy is shutting down"
        except (ConnectionError, OSError) as exc:
            if conn.outcome is not Outcome.CUT:
                conn.outcome, conn.error = Outcome.UPSTREAM_FAILED, f"connection broke: {exc}"
        except Exception:  # a bug must cost one connection, never the proxy
            log.exception("egress connection failed")
            conn.outcome, conn.error = Outcome.UPSTREAM_FAILED, "internal error"
        finally:
            self._relaying.discard(conn)
            self._tasks.discard(task)
            for side in (writer, conn.upstream):
                if side is not None:
                    side.close()  # flushes what is still buffered (a refusal), then closes
            self.decisions.emit(conn.record())

    async def _exchange(self, conn: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._tasks) > self.limits.max_connections:
            conn.decision = Decision(False, "busy", "too many connections through this proxy")
            conn.outcome = Outcome.BUSY
            return await answer(writer, error_response(503, conn.decision.reason))
        try:
            request = await read_request(
                reader, max_bytes=self.limits.max_header_bytes, timeout=self.limits.header_timeout)
        except SocksRefused as exc:
            conn.method, conn.decision = f"SOCKS{exc.version}", Decision(False, "socks", exc.message)
            conn.outcome, conn.error = Outcome.DENIED, exc.message
            return await answer(writer, exc.reply)
        except RequestError as exc:
            conn.decision = Decision(False, "bad-request", exc.message)
            conn.outcome, conn.error = Outcome.BAD_REQUEST, exc.message
            if exc.status:
                await answer(writer, error_response(exc.status, exc.message))
            return None
        conn.host, conn.port = request.host, request.port
        conn.method = "CONNECT" if request.is_connect else "HTTP"
        if self.budget is not None and (why := self.budget.refusal()) is not None:
            conn.decision, conn.outcome = Decision(False, RULE_BUDGET, why), Outcome.DENIED
            return await answer(writer, error_response(403, f"denied by rule {RULE_BUDGET}: {why}"))
        conn.budget = self.budget
        try:
            addresses = await self._destinations(conn, request, may_hold=True)
            up_reader, conn.upstream = await self._open_upstream(conn, addresses)
        except _Refused as refused:
            conn.decision, conn.outcome = refused.decision, Outcome.DENIED
            text = f"denied by rule {refused.decision.rule}: {refused.decision.reason}"
            return await answer(writer, error_response(403, text))
        except _Failed as failed:
            conn.outcome, conn.error = failed.outcome, failed.message
            return await answer(writer, error_response(failed.status, failed.message))
        conn.outcome = Outcome.COMPLETED
        self._relaying.add(conn)
        if request.is_connect:
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await relay((reader, writer), (up_reader, conn.upstream), up=conn.count_up, down=conn.count_down,
                        until_origin_done=False)
        else:
            await self._forward_http(conn, request, reader, writer, up_reader, conn.upstream)
        return None

    async def _destinations(self, conn: _Connection, request: ProxyRequest, *, may_hold: bool) -> list[IPAddress]:
        """The addresses this connection may go to, in order; raises _Refused otherwise."""
        # A pinned name is never looked up, so judging it needs no prejudging (and it may be
        # allowed by an IP entry for its address, which prejudge knows nothing of).
        early = (None if self._is_pinned(request.host)
                 else prejudge(host=request.host, port=request.port, policy=self._policy))
        if early is not None and not (early.approvable and may_hold and self.approvals.has_approvers):
            raise _Refused(early)
        if early is None:
            judged = await self._judge(conn, request)
            allowed = [(a, d) for a, d in judged if d.allowed]
            if allowed:
                conn.decision, conn.address = allowed[0][1], str(allowed[0][0])
                return [a for a, _ in allowed]
            held = [a for a, d in judged if d.approvable]
            if not held or not may_hold or not self.approvals.has_approvers:
                raise _Refused(judged[0][1])
            conn.address = str(held[0])
        result = await self.approvals.ask(host=conn.host, address=conn.address, port=conn.port, method=conn.method)
        if result.verdict is ApprovalVerdict.DENY:
            raise _Refused(Decision(False, result.rule, result.reason))
        if result.rule == RULE_POLICY:  # released by a policy change: the new policy decides
            return await self._destinations(conn, request, may_hold=False)
        judged = await self._judge(conn, request)  # names are looked up only once approved
        public = [a for a, d in judged if d.allowed or d.approvable]
        if not public:  # an approval never unlocks a private or special address
            raise _Refused(judged[0][1])
        conn.address = str(public[0])
        if result.verdict is ApprovalVerdict.ALLOW_ALWAYS:
            entry = _entry_for(host=conn.host, port=conn.port)
            self.set_policy(policy=self._policy.with_entry(entry=entry))
            conn.decision = Decision(True, entry.render(), f"{entry.render()} added to the allowlist by an approver")
        else:
            conn.decision, conn.approved_once = Decision(True, result.rule, result.reason), result.rule == RULE_ONCE
        return public

    async def _judge(self, conn: _Connection, request: ProxyRequest) -> list[tuple[IPAddress, Decision]]:
        pinned = self._pinned.get(normalise_host(host=request.host))
        literal = ip_literal(host=request.host) if pinned is None else pinned
        if literal is not None:
            addresses: Sequence[IPAddress] = (literal,)
        else:
            try:
                async with asyncio.timeout(self.limits.connect_timeout):
                    addresses = await self._resolve(host=request.host, port=request.port)
            except (OSError, TimeoutError, UnicodeError) as exc:
                raise _Failed(Outcome.UNRESOLVED, 502, f"cannot resolve {request.host}: {exc}") from None
            if not addresses:
                raise _Failed(Outcome.UNRESOLVED, 502, f"cannot resolve {request.host}: no addresses")
        conn.address = str(addresses[0])
        return [(a, decide(host=request.host, address=a, port=request.port, policy=self._policy,
                           pinned=pinned is not None)) for a in addresses]

    async def _open_upstream(
        self, conn: _Connection, addresses: list[IPAddress]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        errors = []
        for address in addresses:
            try:
                async with asyncio.timeout(self.limits.connect_timeout):
                    reader, writer = await self._connect(address=address, port=conn.port)
            except (OSError, TimeoutError) as exc:
                errors.append(f"{address}: {exc or 'timed out'}")
                continue
            conn.address = str(address)
            verdict = self._verdict_for(conn)  # the policy may have changed while connecting
            if verdict is not None:
                writer.transport.abort()
                raise _Refused(verdict)
            return reader, writer
        raise _Failed(Outcome.UPSTREAM_FAILED, 502, f"cannot connect to {conn.host}:{conn.port} ({'; '.join(errors)})")

    async def _forward_http(
        self, conn: _Connection, request: ProxyRequest, reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
    ) -> None:
        head = origin_head(request)
        up_writer.write(head)
        conn.count_up(len(head))

        async def response() -> bool:  # interim (1xx) heads are passed on as sent
            while True:
                try:
                    lines = await read_head(up_reader, max_bytes=_MAX_RESPONSE_HEAD)
                    status, out = response_head(lines)
                except RequestError:
                    conn.outcome, conn.error = Outcome.UPSTREAM_FAILED, "no valid response from the origin"
                    await answer(writer, error_response(502, conn.error))
                    return False
                interim = 100 <= status < 200 and status != 101
                out = b"\r\n".join(lines) + b"\r\n\r\n" if interim else out
                writer.write(out)
                conn.count_down(len(out))
                if not interim:
                    return True

        await relay((reader, writer), (up_reader, up_writer), up=conn.count_up, down=conn.count_down,
                    until_origin_done=True, response_head=response)

    def _is_pinned(self, host: str) -> bool:
        return normalise_host(host=host) in self._pinned

    def _verdict_for(self, conn: _Connection) -> Decision | None:
        """None if the live policy still allows this connection, else the refusal."""
        verdict = decide(host=conn.host, address=ipaddress.ip_address(conn.address), port=conn.port,
                         policy=self._policy, pinned=self._is_pinned(conn.host))
        if verdict.allowed or (conn.approved_once and verdict.approvable):
            return None
        return verdict

    def _resettle(self, request_id: str, *, host: str, address: str, port: int) -> None:
        """After a policy change, end holds the new policy decides by itself."""
        if address:
            verdict: Decision | None = decide(host=host, address=ipaddress.ip_address(address), port=port,
                                              policy=self._policy, pinned=self._is_pinned(host))
        else:
            verdict = prejudge(host=host, port=port, policy=self._policy)
        if verdict is not None and verdict.approvable:
            return  # still for a person to decide
        if verdict is None or verdict.allowed:
            result = ApprovalResult(ApprovalVerdict.ALLOW_ONCE, RULE_POLICY, "the new policy decides")
        else:
            result = ApprovalResult(ApprovalVerdict.DENY, verdict.rule, verdict.reason)
        self.approvals.settle(request_id=request_id, result=result)


def _entry_for(*, host: str, port: int) -> AllowEntry:
    literal = ip_literal(host=host)
    if literal is not None:
        return AllowEntry(kind=EntryKind.NETWORK, network=ipaddress.ip_network(literal), port=port)
    return AllowEntry(kind=EntryKind.HOST, name=host, port=port)
