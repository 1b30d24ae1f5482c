#!/usr/bin/env python3
"""A stranger for benches/under_attack.sh: from IPS loopback addresses (127.55.0.x), opens PER_IP
connections to every P2P address given, half of them held idle and half sending a frame header that
announces 60,000 bytes, then one byte a second (slowloris). Reconnects what the node closes. Loopback
only; stops by itself after SECS seconds."""
import socket, sys, time

targets = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in sys.argv[1].split(",")]
per_ip, ips, secs = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
HEADER = bytes.fromhex("56504448") + (60000).to_bytes(4, "big") + (1002).to_bytes(2, "big")

def connect(src, dst):
    s = socket.socket()
    s.setblocking(False)
    s.bind((src, 0))
    try:
        s.connect(dst)
    except BlockingIOError:
        pass
    return s

socks = []
for i in range(ips):
    src = f"127.55.0.{i + 1}"
    for dst in targets:
        for j in range(per_ip):
            socks.append((connect(src, dst), src, dst, j % 2 == 1, [False]))
end = time.time() + secs
while time.time() < end:
    for k, (s, src, dst, slow, started) in enumerate(socks):
        try:
            if slow:
                s.send(HEADER if not started[0] else b"\0")
                started[0] = True
        except (BlockingIOError, OSError) as e:
            if not isinstance(e, BlockingIOError):
                s.close()
                socks[k] = (connect(src, dst), src, dst, slow, [False])
    time.sleep(1)
