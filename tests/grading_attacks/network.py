"""Connects to a TCP server on the grading machine and to the internet."""
THREAT = "network access"
EXPECT = {"score": "full"}

CODE = '''
import socket, urllib.request
for host in ("127.0.0.1", {host!r}):
    try:
        socket.create_connection((host, {port}), timeout=3).sendall(b"stolen")
        print("connected to", host)
    except OSError as error:
        print(host, type(error).__name__)
try:
    urllib.request.urlopen("https://pypi.org", timeout=3)
    print("internet")
except Exception as error:
    print(type(error).__name__)
'''


def build(sub):
    sub.add_cell(CODE.format(host=sub.host_address, port=sub.port))
