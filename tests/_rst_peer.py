"""A TCP peer that ends its connection with a reset (SO_LINGER 0), which Deno cannot do.

server [ANSWER]: listen on 127.0.0.1:0, print the port, accept one connection, read a little,
                 send ANSWER if given, then reset it.
client PORT:     connect to 127.0.0.1:PORT, send "ping", read 4 bytes, then reset.
"""
import socket
import struct
import sys


def reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


if sys.argv[1] == "server":
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    conn.recv(1024)
    if len(sys.argv) > 2:
        conn.sendall(sys.argv[2].encode())
    reset(conn)
    listener.close()
else:
    conn = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    conn.sendall(b"ping")
    got = b""
    while len(got) < 4:
        got += conn.recv(4 - len(got))
    reset(conn)
    print(got.decode(), flush=True)
