"""Clients that end their connection with a reset (SO_LINGER 0), which Deno cannot do; for
tests/fault_test.ts. (tests/_rst_peer.py's client waits for 4 bytes back before it resets, so it
cannot serve an upstream that never answers or closes at once.) Every socket call is bounded by
a 5 s timeout, so the program always ends.

once PORT NBYTES:     connect to 127.0.0.1:PORT, send NBYTES bytes, wait 100 ms, reset.
                      Prints "reset".
burst PORT N:         open N connections to 127.0.0.1:PORT, then reset each (no bytes sent).
                      Prints "reset N".
loop PORT SECONDS ID: until SECONDS have passed (at most 5000 rounds): connect, send a
                      request, read until its echo is complete or EOF, reset. Prints
                      "<requests> <exact echoes>".
"""
import socket
import struct
import sys
import time

TIMEOUT = 5.0


def reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def once(port, nbytes):
    conn = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    conn.sendall(b"r" * nbytes)
    time.sleep(0.1)
    reset(conn)
    print("reset", flush=True)


def burst(port, n):
    conns = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in range(n)]
    for conn in conns:
        reset(conn)
    print("reset", n, flush=True)


def loop(port, seconds, ident):
    deadline = time.monotonic() + seconds
    requests = echoed = 0
    while time.monotonic() < deadline and requests < 5000:
        request = f"rst-{ident}-{requests}\n".encode()
        requests += 1
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=2.0)
        except OSError:
            continue
        try:
            conn.sendall(request)
            got = b""
            while len(got) < len(request):
                chunk = conn.recv(len(request) - len(got))
                if not chunk:
                    break
                got += chunk
            if got == request:
                echoed += 1
        except OSError:
            pass
        finally:
            reset(conn)
    print(requests, echoed, flush=True)


if sys.argv[1] == "once":
    once(int(sys.argv[2]), int(sys.argv[3]))
elif sys.argv[1] == "burst":
    burst(int(sys.argv[2]), int(sys.argv[3]))
else:
    loop(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
