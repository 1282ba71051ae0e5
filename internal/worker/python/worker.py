"""Portico's Python worker: runs one WSGI application for the Go supervisor.

Stdlib only, Python >= 3.8. Started by portico as

    python -u worker.py '<json config>'

with these inherited file descriptors (numbers in the JSON config):

  status_fd  write end of a pipe: b"ready\\n" and a JSON line (the
             interpreter's executable and version) once the app is
             imported, or b"error\\n" followed by the import traceback,
             then exit(3);
  ctl_fd     read end of a pipe: lines b"i <slot> <n>\\n" ask to interrupt
             the n-th request of that slot (counting from 1) if it is still
             running; SIGUSR1 says a line is waiting;
  slot_fds   one connected unix stream socket per slot (request thread).

On a slot socket, requests come as uwsgi packets: a 4-byte header
(modifier1, vars size u16 LE, modifier2), the vars block (u16 LE key length,
key, u16 LE value length, value, ...), then exactly CONTENT_LENGTH body bytes.
With modifier2 1 the vars block is b"KEY\0VALUE\0KEY\0VALUE" instead, which
decodes in C (one split) rather than in a Python loop; portico uses it
whenever no value contains a NUL byte.
Responses go back as frames: one type byte, a u32 LE payload length, the
payload:

  H  status line and headers: b"200 OK\\r\\nName: value\\r\\n..." (latin-1)
  B  body bytes
  E  end of the response; the slot takes the next request
  X  the request failed (payload: a one-line reason, then after a newline
     the Python traceback, which Go logs as one record); the slot takes the
     next request. Before H, Go answers 500 (the reason "timeout": 504);
     after H, it aborts the response.

A slot's socket reaching EOF means "stop": the worker exits when all slots
are closed. The protocol is documented on the Go side in internal/worker.
"""

import ast
import ctypes
import importlib
import io
import json
import os
import signal
import socket
import struct
import sys
import threading
import traceback

SERVER_SOFTWARE = "Portico"

_frame = struct.Struct("<cI").pack
_END = _frame(b"E", 0)
_INLINE_BODY = 1 << 18  # bodies up to this size are read at once into a BytesIO


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc


class RequestTimeout(BaseException):
    """Raised inside the application when its request passed the timeout.

    A BaseException (like KeyboardInterrupt) so that the application's
    `except Exception:` handlers let it through while `finally:` blocks and
    context managers (database transactions) unwind.
    """


_timeout_exc = ctypes.py_object(RequestTimeout)
_no_exc = ctypes.py_object()  # NULL: cancels a pending async exception


class Input(object):
    """wsgi.input for large bodies: reads at most CONTENT_LENGTH bytes."""

    __slots__ = ("_r", "_left")

    def __init__(self, rfile, length):
        self._r = rfile
        self._left = length

    def read(self, size=-1):
        left = self._left
        if left <= 0:
            return b""
        if size is None or size < 0 or size > left:
            size = left
        data = self._r.read(size)
        self._left = left - len(data)
        return data

    def readline(self, size=-1):
        left = self._left
        if left <= 0:
            return b""
        if size is None or size < 0 or size > left:
            size = left
        data = self._r.readline(size)
        self._left = left - len(data)
        return data

    def readlines(self, hint=-1):
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                break
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def drain(self):
        while self._left > 0:
            if not self.read(65536):
                raise EOFError("connection closed inside a request body")


class FileWrapper(object):
    """wsgi.file_wrapper: a regular file is sent with os.sendfile."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


class Slot(object):
    """One request thread and its connection to portico.

    in_app is True while the application runs for the slot's request: only
    then may an interrupt raise RequestTimeout in it. sending is True while
    the main thread is inside sendall: a signal there would cut a frame in
    two, so the interrupt is kept in pending and raised after the send.
    """

    __slots__ = ("index", "sock", "rfile", "ident", "in_app", "is_main", "sending", "pending", "count")

    def __init__(self, index, sock):
        self.count = 0  # requests read on this slot: the current one's number
        self.index = index
        self.sock = sock
        self.rfile = sock.makefile("rb", 65536)
        self.ident = None
        self.in_app = False
        self.is_main = False
        self.sending = False
        self.pending = False

    def send(self, data):
        self.sending = True
        try:
            self.sock.sendall(data)
        finally:
            self.sending = False
        if self.pending:
            self.pending = False
            raise RequestTimeout()


class Response(object):
    """State of one request's response: start_response, write and sending."""

    __slots__ = ("slot", "send", "status", "headers", "head", "sent", "ended", "length")

    def __init__(self, slot):
        self.slot = slot
        self.send = slot.send
        self.ended = False
        self.status = None
        self.headers = None
        self.head = None  # encoded H frame not yet sent
        self.sent = False
        self.length = None  # Content-Length the app declared, if any

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        if type(status) is not str:
            raise TypeError("status must be str, not %s" % type(status).__name__)
        if len(status) < 4 or not status[:3].isdigit() or status[3] != " ":
            raise ValueError("status %r is not like '200 OK'" % status)
        if type(headers) is not list:
            raise TypeError("response headers must be a list, not %s" % type(headers).__name__)
        parts = [status, "\r\n"]
        length = None
        for item in headers:
            if type(item) is not tuple or len(item) != 2:
                raise TypeError("response header %r is not a (name, value) tuple" % (item,))
            name, value = item
            if type(name) is not str or type(value) is not str:
                raise TypeError("response header %r: name and value must be str" % (item,))
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise ValueError("response header %r contains a forbidden character" % (name,))
            if len(name) == 14 and name.lower() == "content-length":
                length = int(value)
            parts += (name, ": ", value, "\r\n")
        head = "".join(parts).encode("latin-1")
        self.status = status
        self.headers = headers
        self.length = length
        self.head = _frame(b"H", len(head)) + head
        return self.write

    def write(self, data):
        """The write() callable of PEP 3333 (and the path for streamed chunks)."""
        if self.status is None:
            raise AssertionError("write() before start_response()")
        if type(data) is not bytes:
            if isinstance(data, (bytearray, memoryview)):
                data = bytes(data)
            else:
                raise TypeError("response body chunks must be bytes, not %s" % type(data).__name__)
        if not data:
            return
        if self.sent:
            self.send(_frame(b"B", len(data)) + data)
        else:
            self.sent = True
            self.send(self.head + _frame(b"B", len(data)) + data)

    def finish(self):
        if self.status is None:
            raise AssertionError("the application returned without calling start_response()")
        if self.sent:
            self.ended = True
            self.send(_END)
        else:
            self.sent = self.ended = True
            self.send(self.head + _END)

    def send_list(self, chunks):
        """Fast path for a list or tuple body: one sendall for everything."""
        if self.status is None:
            raise AssertionError("the application returned without calling start_response()")
        if len(chunks) == 1 and not self.sent and type(chunks[0]) is bytes:
            # The common [body]: one concatenation, one send.
            data = chunks[0]
            self.sent = self.ended = True
            if data:
                self.send(self.head + _frame(b"B", len(data)) + data + _END)
            else:
                self.send(self.head + _END)
            return
        out = []
        if not self.sent:
            out.append(self.head)
        for data in chunks:
            if type(data) is not bytes:
                raise TypeError("response body chunks must be bytes, not %s" % type(data).__name__)
            if data:
                out.append(_frame(b"B", len(data)))
                out.append(data)
        out.append(_END)
        self.sent = self.ended = True
        self.send(b"".join(out))

    def send_file(self, wrapper):
        """Send a wsgi.file_wrapper over a regular file with os.sendfile.

        Returns False (nothing sent) when the file cannot be sent that way.
        """
        f = wrapper.filelike
        try:
            fd = f.fileno()
            st = os.fstat(fd)
            pos = f.tell()
        except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
            return False
        import stat as _stat

        if not _stat.S_ISREG(st.st_mode):
            return False
        if self.status is None:
            raise AssertionError("the application returned without calling start_response()")
        count = max(st.st_size - pos, 0)
        if self.length is not None and self.length < count:
            count = self.length
        head = b"" if self.sent else self.head
        self.sent = True
        self.send(head + _frame(b"B", count))
        slot = self.slot
        out = slot.sock.fileno()
        offset = pos
        left = count
        slot.sending = True
        try:
            while left > 0:
                n = os.sendfile(out, fd, offset, min(left, 1 << 30))
                if n == 0:
                    # The file shrank under us: the frame cannot be completed,
                    # so the connection is dropped and Go aborts the response.
                    raise BrokenFrame("file shrank while being sent")
                offset += n
                left -= n
        finally:
            slot.sending = False
        self.ended = True
        self.send(_END)
        return True


_MAX_TRACEBACK = 256 << 10


def _error_frame(reason, tb):
    """The X frame: a one-line reason, a newline, the traceback (Go logs it
    as one record). Only failed requests pay for it."""
    reason = reason.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")[:512]
    tb = tb.encode("utf-8", "replace")
    if len(tb) > _MAX_TRACEBACK:
        tb = b"...\n" + tb[-_MAX_TRACEBACK:]
    payload = reason + b"\n" + tb
    return _frame(b"X", len(payload)) + payload


class BrokenFrame(Exception):
    """The response frame stream cannot continue; the slot must close."""


def _read_vars(data):
    environ = {}
    i = 0
    n = len(data)
    while i < n:
        kl = data[i] | (data[i + 1] << 8)
        i += 2
        key = data[i : i + kl].decode("latin-1")
        i += kl
        vl = data[i] | (data[i + 1] << 8)
        i += 2
        environ[key] = data[i : i + vl].decode("latin-1")
        i += vl
    return environ


class Worker(object):
    def __init__(self, cfg, app):
        self.app = app
        self.slots = []
        self.base = {
            "wsgi.version": (1, 0),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": len(cfg["slot_fds"]) > 1,
            "wsgi.multiprocess": bool(cfg.get("multiprocess", True)),
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
        }
        for i, fd in enumerate(cfg["slot_fds"]):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fd)
            sock.setblocking(True)
            self.slots.append(Slot(i, sock))
        self.ctl_fd = cfg["ctl_fd"]
        os.set_blocking(self.ctl_fd, False)

    def on_interrupt(self, signum, frame):
        try:
            data = os.read(self.ctl_fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        main = False
        for line in data.split(b"\n"):
            parts = line.split()
            if len(parts) not in (2, 3) or parts[0] != b"i":
                continue
            index = int(parts[1])
            if index < 0 or index >= len(self.slots):
                continue
            slot = self.slots[index]
            if not slot.in_app or len(parts) == 3 and int(parts[2]) != slot.count:
                # Not in the app, or on to the next request (portico may
                # write a request ahead): the late interrupt is not for it.
                continue
            if slot.is_main:
                if slot.sending:
                    slot.pending = True
                else:
                    main = True
            elif slot.ident is not None:
                _set_async_exc(ctypes.c_ulong(slot.ident), _timeout_exc)
        if main:
            raise RequestTimeout()

    def serve(self, slot):
        slot.ident = threading.get_ident()
        rfile = slot.rfile
        base = self.base
        read = rfile.read
        while True:
            try:
                head = read(4)
            except OSError:
                return
            if len(head) < 4:
                return
            slot.count += 1
            size = head[1] | (head[2] << 8)
            environ = base.copy()
            if head[3] == 1:
                it = iter(read(size).decode("latin-1").split("\0"))
                environ.update(zip(it, it))
            else:
                environ.update(_read_vars(read(size)))
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length <= _INLINE_BODY:
                body = read(length) if length else b""
                if len(body) < length:
                    return
                environ["wsgi.input"] = stdin = io.BytesIO(body)
            else:
                environ["wsgi.input"] = stdin = Input(rfile, length)
            try:
                self.handle(slot, environ)
                if stdin.__class__ is Input:
                    stdin.drain()
            except (OSError, EOFError, BrokenFrame) as e:
                print("portico worker: slot %d: connection lost: %s" % (slot.index, e), file=sys.stderr)
                return

    def handle(self, slot, environ):
        """Run the application for one request; send exactly one E or X frame."""
        resp = Response(slot)
        result = cls = None
        try:
            slot.in_app = True
            try:
                result = self.app(environ, resp.start_response)
                cls = result.__class__
                if cls is list or cls is tuple:
                    resp.send_list(result)
                elif cls is FileWrapper and resp.send_file(result):
                    pass
                else:
                    for data in result:
                        if data:
                            resp.write(data)
                    resp.finish()
            finally:
                try:
                    if result is not None and cls is not list and hasattr(result, "close"):
                        result.close()
                finally:
                    slot.in_app = False
                    slot.pending = False
                    if not slot.is_main:
                        # Cancel an interrupt that was asked for but has not
                        # fired yet: past this point it would hit the protocol.
                        _set_async_exc(ctypes.c_ulong(slot.ident), _no_exc)
        except RequestTimeout:
            if not resp.ended:
                slot.sock.sendall(_error_frame("timeout", traceback.format_exc()))
        except (OSError, BrokenFrame):
            raise
        except BaseException as e:
            if isinstance(e, (SystemExit, KeyboardInterrupt)):
                print("portico worker: the application raised %s; the worker exits" % type(e).__name__, file=sys.stderr)
                sys.stderr.flush()
                os._exit(1)
            tb = traceback.format_exc()
            if resp.ended:
                # The response went out whole (the error came from close()):
                # no frame can carry it any more.
                print(
                    "portico worker: error in %s %s after the response:\n%s"
                    % (environ.get("REQUEST_METHOD"), environ.get("REQUEST_URI"), tb),
                    file=sys.stderr,
                    end="",
                )
            else:
                slot.sock.sendall(_error_frame("%s: %s" % (type(e).__name__, e), tb))

    def run(self):
        signal.signal(signal.SIGUSR1, self.on_interrupt)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        threads = []
        for slot in self.slots[1:]:
            t = threading.Thread(target=self.serve, args=(slot,), name="portico-slot-%d" % slot.index, daemon=True)
            t.start()
            threads.append(t)
        main = self.slots[0]
        main.is_main = True
        self.serve(main)
        for t in threads:
            t.join()


def split_spec(spec):
    """Split MODULE:CALLABLE at the last colon before any "(" (factory
    arguments may hold colons); no callable part gives ""."""
    head = spec.split("(", 1)[0]
    i = head.rfind(":")
    if i <= 0:
        return spec, ""
    module, attr = spec[:i], spec[i + 1 :]
    name = attr.split("(", 1)[0]
    if "/" in name or name.endswith(".py"):
        return spec, ""
    return module, attr


def parse_callable(attr):
    """Parse CALLABLE: a dotted name, or a factory call with literal
    arguments only (`create_app`, `create_app()`, `create_app('testing')`,
    `create_app(env="prod", debug=False)`), as gunicorn accepts. Returns
    (dotted name, args, kwargs), args None for a plain name. The arguments
    are parsed with ast and evaluated with ast.literal_eval: strings, bytes,
    numbers, True/False/None, and tuples, lists, dicts and sets of those;
    nothing of the app's is looked up or run, so a name or a call among
    them is an error naming the expression."""
    try:
        tree = ast.parse(attr.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError("%r is not a name or a factory call: %s" % (attr, e.msg)) from None
    node = tree.body
    call = isinstance(node, ast.Call)
    func = node.func if call else node
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        raise ValueError("%r is not a name or a factory call" % attr)
    parts.append(func.id)
    name = ".".join(reversed(parts))
    if not call:
        return name, None, None

    def literal(arg):
        try:
            return ast.literal_eval(arg)
        except ValueError:
            src = ast.get_source_segment(attr.strip(), arg) or ast.dump(arg)
            raise ValueError(
                "%r: factory argument %s is not a literal (strings, numbers, True/False/None, "
                "and tuples, lists, dicts of those)" % (attr, src)
            ) from None

    args = []
    for a in node.args:
        if isinstance(a, ast.Starred):
            raise ValueError("%r: *args is not allowed in factory arguments" % attr)
        args.append(literal(a))
    kwargs = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError("%r: **kwargs is not allowed in factory arguments" % attr)
        kwargs[kw.arg] = literal(kw.value)
    return name, args, kwargs


def load_app(spec):
    """Import MODULE:CALLABLE. MODULE may be dotted or a path to a .py file;
    CALLABLE defaults to `application`, then `app`; `name()` or
    `name('literal', key=1)` calls a factory (see parse_callable)."""
    module, attr = split_spec(spec)
    if module.endswith(".py") or os.sep in module:
        path = os.path.abspath(module)
        directory, filename = os.path.split(path)
        sys.path.insert(0, directory)
        module = filename[:-3] if filename.endswith(".py") else filename
    # The callable is parsed before the import: a bad one is told at once.
    wanted = [parse_callable(attr)] if attr else [("application", None, None), ("app", None, None)]
    mod = importlib.import_module(module)
    for name, args, kwargs in wanted:
        obj = mod
        try:
            for part in name.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if args is not None:
            obj = obj(*args, **kwargs)
        if not callable(obj):
            raise TypeError("%s:%s is not callable" % (module, name))
        return obj
    raise AttributeError("module %r has no %s" % (module, " or ".join(repr(n) for n, _, _ in wanted)))


def main():
    cfg = json.loads(sys.argv[1])
    status_fd = cfg["status_fd"]
    if cfg.get("sched_batch") and hasattr(os, "SCHED_BATCH"):
        # Before the app's import can start threads: they inherit it.
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except OSError as e:
            print("portico worker: cannot set SCHED_BATCH: %s" % e, file=sys.stderr)
    sys.argv = [cfg["app"]]
    directory = cfg.get("chdir")
    if directory:
        os.chdir(directory)
        sys.path.insert(0, directory)
    elif "" not in sys.path:
        sys.path.insert(0, "")
    try:
        app = load_app(cfg["app"])
    except BaseException:
        os.write(status_fd, b"error\n" + traceback.format_exc().encode("utf-8", "replace"))
        os._exit(3)
    worker = Worker(cfg, app)
    info = {"executable": sys.executable, "version": sys.version.split()[0]}
    os.write(status_fd, b"ready\n" + json.dumps(info).encode() + b"\n")
    os.close(status_fd)
    worker.run()


if __name__ == "__main__":
    main()
