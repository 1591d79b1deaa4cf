"""Writes hundreds of MiB to its home folder and /tmp."""
THREAT = "disk filling"
EXPECT = {"score": "full"}


def build(sub):
    sub.add_cell("for path in ('filler', '/tmp/filler', '/dev/shm/filler'):\n"
                 "    try:\n"
                 "        with open(path, 'wb') as f:\n"
                 "            for _ in range(600):\n"
                 "                f.write(b'x' * (1 << 20))\n"
                 "    except OSError as error:\n"
                 "        print(path, type(error).__name__)")
