# Board side of the wire to the host process that plays this board's hardware (MicroPython).
#
# Two pipes, opened by _board.py before the flash is mounted. A request is 8 bytes [op, len lo, len hi,
# five argument bytes] and len bytes of data; an answer is [len lo, len hi, status] and len bytes of data.
# A non-zero status is an errno, raised here as OSError. Buffers are preallocated, so a sensor read costs
# the board's heap (almost) nothing.
from micropython import const

_r = None
_w = None
CAUSE = 1  # machine.reset_cause() of this boot, set by _board.py
UID = b"\0\0\0\0\0\0"
req = bytearray(8)
_ans = bytearray(4)

OP_I2C_WRITE = const(0x57)  # args: addr, reg (0xFFFF: none)
OP_I2C_READ = const(0x52)  # args: addr, reg (0xFFFF: none), n
OP_I2C_SCAN = const(0x53)
OP_UART = const(0x55)  # args: sub (a any, r read n, w write), n
OP_UNITS = const(0x46)  # args: n (32 bit): how many units may reach flash before an armed power cut
OP_CUT = const(0x58)  # the armed cut is here: pull the plug
OP_RESET = const(0x5A)  # args: cause
OP_WDT = const(0x54)  # args: timeout ms (32 bit), 0 = feed
OP_NET = const(0x4E)  # args: sub; data: text arguments
OP_PART = const(0x50)  # args: sub; data: text arguments (+ block data)
OP_ERROR = const(0x45)  # data: what boot.py/main.py raised (for the host's boot record)
OP_IDLE = const(0x51)  # main.py ended: the REPL would wait now


def init(rfd, wfd):
    global _r, _w
    _w = open("/dev/fd/%d" % wfd, "wb")
    _r = open("/dev/fd/%d" % rfd, "rb")


def readn(buf, n):
    # a blocking stream read loops until n bytes or end of file (the host died: nothing more to do)
    got = _r.readinto(buf, n)
    while got < n:
        k = _r.readinto(memoryview(buf)[got:], n - got)
        if not k:
            hang()
        got += k


def args(a0=0, a1=0, a2=0, a3=0, a4=0):
    r = req
    r[3] = a0
    r[4] = a1
    r[5] = a2
    r[6] = a3
    r[7] = a4


def send(op, data=None, more=None):
    """The request in req (args already set) with optional data, given in up to two parts: a block written
    to flash goes out from the caller's buffer, not copied behind its header (the ESP32's writeblocks
    allocates nothing)."""
    k = (len(data) if data is not None else 0) + (len(more) if more is not None else 0)
    r = req
    r[0] = op
    r[1] = k & 0xFF
    r[2] = k >> 8
    _w.write(r)
    if data:
        _w.write(data)
    if more:
        _w.write(more)


def answer(into=None):
    """One answer: its data into `into` (returns the length) or a new bytearray."""
    readn(_ans, 3)
    n = _ans[0] | _ans[1] << 8
    st = _ans[2]
    if into is not None:
        if n:
            readn(into, n)
        out = n
    elif n:
        out = bytearray(n)
        readn(out, n)
    else:
        out = b""
    if st:
        raise OSError(int(bytes(out)) if st == 255 else st)  # 255: the code is in the data
    return out


def call(op, data=None, into=None, more=None):
    send(op, data, more)
    return answer(into)


def units(n):
    """Power-cut accounting of a flash write of n units: how many of them reach flash."""
    args(n & 0xFF, (n >> 8) & 0xFF, (n >> 16) & 0xFF, n >> 24)
    send(OP_UNITS)
    readn(_ans, 3)
    readn(_ans, 4)
    a = _ans
    return a[0] | a[1] << 8 | a[2] << 16 | a[3] << 24


def cut():
    """The armed power cut falls here: what was written stays, and the host pulls the plug."""
    args()
    send(OP_CUT)
    hang()


def reset(cause):
    args(cause)
    send(OP_RESET)
    hang()


def hang():
    # the host ends this process; nothing of this boot may run on meanwhile
    import time

    while True:
        time.sleep(1)
