#!/usr/bin/env python3
"""Small TCP services and clients for the lab's scenarios (standard library only).

Servers (started on the lab server by tests/lab/lab.sh up):
  traffic.py serve-login PORT   a fake login service: sends a banner and a "login: "
                                prompt, reads what comes, replies "denied" and closes.
  traffic.py serve-echo PORT    an echo service: sends every byte back until the client
                                closes (a keep-alive / chat-like session).

Clients (run by tests/lab/scenario.sh in the attacker or client node):
  traffic.py brute HOST PORT SECONDS [--rate N] [--workers N] [--seed N]
      Repeated short sessions against the login service: connect, read the prompt, send
      "user:password", read "denied", close. Prints attempts, denials and errors.
  traffic.py idle HOST PORT SECONDS [--connections N] [--period S] [--seed N]
      A few long-lived, mostly idle sessions: each sends a short line every PERIOD
      seconds (staggered) and reads the echo, then closes at the end.

Exit status of a client: 0 when every session did what it should (with --allow-errors:
when at least one connection was attempted), 1 otherwise, 2 on bad usage.
"""
import argparse
import random
import socket
import socketserver
import sys
import threading
import time

BANNER = b"lab-login 1.0 (authorised users only)\r\nlogin: "
IO_TIMEOUT = 5.0


# ---------------------------------------------------------------------------- servers

class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    address_family = socket.AF_INET6

    def server_bind(self):
        # One dual-stack socket: IPv4 clients arrive as ::ffff:a.b.c.d.
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _Login(socketserver.BaseRequestHandler):
    # Answers whatever arrives first (a line, or a scanner's binary probe) at once.
    def handle(self):
        try:
            self.request.settimeout(10)
            self.request.sendall(BANNER)
            self.request.recv(256)
            self.request.sendall(b"denied\r\n")
        except OSError:
            pass


class _Echo(socketserver.BaseRequestHandler):
    # RFC 862: every byte back as it arrives, until the client closes.
    def handle(self):
        try:
            self.request.settimeout(600)
            for data in iter(lambda: self.request.recv(4096), b""):
                self.request.sendall(data)
        except OSError:
            pass


def serve(handler, port):
    with _Server(("::", port), handler) as server:
        server.serve_forever()


# ---------------------------------------------------------------------------- clients

USERS = ["root", "admin", "user", "test", "oracle", "ubuntu", "pi", "guest", "support", "backup"]
PASSWORDS = ["123456", "password", "admin", "root", "qwerty", "letmein", "12345678", "welcome",
             "changeme", "toor", "passw0rd", "default", "111111", "abc123", "secret", "dragon"]


def _read_until(sock, marker):
    data = b""
    while marker not in data:
        chunk = sock.recv(512)
        if not chunk:
            break
        data += chunk
    return data


def brute(args):
    rng = random.Random(args.seed)
    credentials = [(u, p) for u in USERS for p in PASSWORDS]
    rng.shuffle(credentials)
    deadline = time.monotonic() + args.seconds
    interval = args.workers / args.rate  # each worker's pause between starts
    lock = threading.Lock()
    counts = {"attempts": 0, "denied": 0, "errors": 0}
    next_index = [0]

    def worker(offset):
        start = time.monotonic() + offset
        while True:
            now = time.monotonic()
            if now >= deadline:
                return
            if now < start:
                time.sleep(start - now)
            start += interval
            with lock:
                user, password = credentials[next_index[0] % len(credentials)]
                next_index[0] += 1
                counts["attempts"] += 1
            try:
                with socket.create_connection((args.host, args.port), timeout=IO_TIMEOUT) as sock:
                    if not _read_until(sock, b"login: ").endswith(b"login: "):
                        raise OSError("no login prompt")
                    sock.sendall(f"{user}:{password}\r\n".encode())
                    reply = _read_until(sock, b"\n")
                    outcome = "denied" if reply.startswith(b"denied") else "errors"
            except OSError:
                outcome = "errors"
            with lock:
                counts[outcome] += 1

    threads = [threading.Thread(target=worker, args=(i * interval / args.workers,))
               for i in range(args.workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"brute: {counts['attempts']} attempts, {counts['denied']} denied, "
          f"{counts['errors']} errors against {args.host}:{args.port}")
    if counts["attempts"] == 0:
        return 1
    if args.allow_errors:
        return 0
    return 0 if counts["errors"] == 0 else 1


def idle(args):
    deadline = time.monotonic() + args.seconds
    results = []
    lock = threading.Lock()

    def session(index):
        sent = echoed = 0
        error = None
        # Stagger the sessions, and jitter each period by up to 20 %: people, not a timer.
        next_send = time.monotonic() + (index + 1) * args.period / (args.connections + 1)
        jitter = random.Random(args.seed * 1000 + index)
        try:
            with socket.create_connection((args.host, args.port), timeout=IO_TIMEOUT) as sock:
                reader = sock.makefile("rb")
                while True:
                    now = time.monotonic()
                    if next_send >= deadline:
                        time.sleep(max(0.0, deadline - now))
                        break
                    time.sleep(max(0.0, next_send - now))
                    line = f"keepalive {index} {sent} {jitter.randrange(10**6)}\n".encode()
                    sock.sendall(line)
                    sent += 1
                    if reader.readline(4096) == line:
                        echoed += 1
                    next_send += args.period * jitter.uniform(0.8, 1.2)
                sock.shutdown(socket.SHUT_WR)
                reader.read()  # the server closes after our FIN
        except OSError as exc:
            error = exc
        with lock:
            results.append((index, sent, echoed, error))

    threads = [threading.Thread(target=session, args=(i,)) for i in range(args.connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ok = True
    for index, sent, echoed, error in sorted(results):
        print(f"idle: session {index}: {sent} lines sent, {echoed} echoed"
              + (f", error: {error}" if error else ""))
        ok = ok and error is None and sent > 0 and echoed == sent
    if args.allow_errors:
        return 0 if results else 1
    return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve-login", "serve-echo"):
        p = sub.add_parser(name)
        p.add_argument("port", type=int)
    p = sub.add_parser("brute")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("seconds", type=float)
    p.add_argument("--rate", type=float, default=40.0, help="sessions per second (all workers)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--allow-errors", action="store_true")
    p = sub.add_parser("idle")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("seconds", type=float)
    p.add_argument("--connections", type=int, default=3)
    p.add_argument("--period", type=float, default=3.0, help="seconds between lines")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--allow-errors", action="store_true")
    args = parser.parse_args()
    if args.command == "serve-login":
        serve(_Login, args.port)
    elif args.command == "serve-echo":
        serve(_Echo, args.port)
    elif args.command == "brute":
        if args.rate <= 0 or args.workers < 1 or args.seconds <= 0:
            parser.error("rate, workers and seconds must be positive")
        return brute(args)
    else:
        if args.connections < 1 or args.period <= 0 or args.seconds <= 0:
            parser.error("connections, period and seconds must be positive")
        return idle(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
