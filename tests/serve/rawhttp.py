"""rawhttp.py - raw-socket HTTP/1.1 clients for the serve tests: what curl
cannot do (hold idle connections, half-close, duplicate headers).

  rawhttp.py PORT limits PER_IP IDLE_S     per-address / global limits, idle close
  rawhttp.py PORT global MAX               the global cap
  rawhttp.py PORT halfclose MAX_TOKENS     answer after shutdown(SHUT_WR)
  rawhttp.py PORT dupcl                    duplicate Content-Length headers

Each prints `name value` lines for the shell test to compare."""
import json
import select
import socket
import sys
import time

PORT = int(sys.argv[1])


def conn(src="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.connect(("127.0.0.1", PORT))
    return s


def read_all(s, timeout=30.0):
    s.settimeout(timeout)
    out = b""
    while True:
        try:
            b = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not b:
            break
        out += b
    return out


def request(src, path, method="GET", body=b"", headers=()):
    """One request with Connection: close; returns (status, headers, body)."""
    s = conn(src)
    h = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n" % (method, path, PORT)
    for x in headers:
        h += x + "\r\n"
    if body:
        h += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    s.sendall(h.encode() + b"\r\n" + body)
    return parse(read_all(s))


def parse(raw):
    """The final response (interim 1xx skipped): (status, {headers}, body)."""
    while True:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if 100 <= status < 200:
            raw = rest
            continue
        hdrs = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        return status, hdrs, rest


def closed_within(s, seconds):
    """True if the server closes s (EOF or reset) within `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r, _, _ = select.select([s], [], [], max(0.0, end - time.monotonic()))
        if r:
            try:
                if s.recv(1) == b"":
                    return True
            except ConnectionResetError:
                return True
    return False


def out(name, value):
    print(name, value, flush=True)


def limits(per_ip, idle):
    held = [conn() for _ in range(per_ip)]
    # the server counts a connection once it has accepted it: make sure it has
    for s in held:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % PORT)
        parse(s.recv(65536))
    # idle keep-alive connections stay open a while (a third of the idle timeout)
    out("held_open_early", not closed_within(held[0], idle / 3))
    st, h, b = request("127.0.0.1", "/health")
    out("over_ip_status", st)
    out("over_ip_connection", h.get("connection", "").lower())
    out("over_ip_code", json.loads(b or b"{}").get("error", {}).get("code"))
    # more refused ones from that address than the global cap leaves room for:
    # they are not counted, so another address is still served
    extra = [conn() for _ in range(16)]
    time.sleep(0.3)
    st, _, _ = request("127.0.0.2", "/health")
    out("other_ip_status", st)
    for x in extra:
        x.close()
    # an over-limit connection that never sends a request is closed within ~2 s
    t0 = time.monotonic()
    s = conn()
    out("over_idle_closed", closed_within(s, 6))
    out("over_idle_closed_fast", time.monotonic() - t0 < idle)
    # ... and are closed after the idle timeout
    out("held_closed", all(closed_within(x, idle + 5) for x in held))
    st, _, _ = request("127.0.0.1", "/health")
    out("after_idle_status", st)


def global_cap(cap):
    held = [conn("127.0.0.%d" % (2 + i % 3)) for i in range(cap)]
    for s in held:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % PORT)
        parse(s.recv(65536))
    st, _, b = request("127.0.0.1", "/health")
    out("over_all_status", st)
    out("over_all_message", "limit %d" % cap in json.loads(b or b"{}").get("error", {}).get("message", ""))
    for s in held:
        s.close()
    time.sleep(0.3)
    st, _, _ = request("127.0.0.1", "/health")
    out("after_close_status", st)


def halfclose(max_tokens):
    body = json.dumps({"prompt": "Once", "max_tokens": max_tokens, "n": 2, "ignore_eos": True,
                       "temperature": 0}).encode()
    s = conn()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (PORT, len(body), body))
    s.shutdown(socket.SHUT_WR)
    raw = read_all(s, 120)
    st, _, b = parse(raw)
    out("half_status", st)
    # the server saw the FIN while generating (and told the client it is still working)
    out("half_interim_102", raw.startswith(b"HTTP/1.1 102 "))
    try:
        out("half_tokens", json.loads(b)["usage"]["completion_tokens"])
    except Exception:
        out("half_tokens", "none:" + b[:200].decode("latin-1"))


def dupcl():
    body = b'{"prompt":"Once","max_tokens":2}'
    for name, lens in (("conflict", (len(body), len(body) + 7)), ("same", (len(body), len(body)))):
        s = conn()
        h = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n" % PORT
        for n in lens:
            h += b"Content-Length: %d\r\n" % n
        s.sendall(h + b"\r\n" + body)
        st, hd, _ = parse(read_all(s, 10))
        out("dupcl_%s_status" % name, st)
        out("dupcl_%s_connection" % name, hd.get("connection", "").lower() or "-")


mode = sys.argv[2]
if mode == "limits":
    limits(int(sys.argv[3]), float(sys.argv[4]))
elif mode == "global":
    global_cap(int(sys.argv[3]))
elif mode == "halfclose":
    halfclose(int(sys.argv[3]))
elif mode == "dupcl":
    dupcl()
