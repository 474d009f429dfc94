"""File creation and modification on removable media, through fanotify (Linux 5.9+, root).

One fanotify group in FID mode (FAN_REPORT_FID | FAN_REPORT_DFID_NAME) holds a filesystem mark
for each removable mount (MountSource tells it which). Events carry the writing process's pid
and the directory's file handle plus the entry name; the directory is reopened with
open_by_handle_at() to get its path. Marks do not keep a mount busy, and no descriptor on the
media is held between events, so the user can still unmount it.

* FAN_CREATE, then FAN_CLOSE_WRITE of that name  -> FileCreated
* FAN_CLOSE_WRITE of an existing file            -> FileModified
* FAN_RENAME (5.17+, old and new name in one)    -> FileRenamed
A filesystem without file handles (exFAT, NTFS, some FUSE) cannot take FID-mode marks: its mount
gets a classic mount mark (FAN_CLOSE_WRITE with an open descriptor) instead, reported as
FileModified, with AdditionalFields.FanotifyMode saying why creation is not told apart.
fanotify merges identical unread events, so a burst of writes by one process is one row.
The initiating process is the writer, from the exec-time process table (a short ``cp`` has
usually exited by the time its file event is read).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator

from quarry_agent.mapping import FILE_CREATED, FILE_MODIFIED, FILE_RENAMED, file_event
from quarry_agent.procinfo import ProcessTable
from quarry_agent.sources import Event
from quarry_agent.sources.linux_mounts import Mount

log = logging.getLogger("quarry_agent.files")

FAN_CLOEXEC, FAN_NONBLOCK, FAN_CLASS_NOTIF = 0x1, 0x2, 0x0
FAN_REPORT_FID, FAN_REPORT_DIR_FID, FAN_REPORT_NAME = 0x200, 0x400, 0x800
FAN_MARK_ADD, FAN_MARK_REMOVE, FAN_MARK_MOUNT, FAN_MARK_FILESYSTEM = 0x1, 0x2, 0x10, 0x100
FAN_CLOSE_WRITE, FAN_Q_OVERFLOW, FAN_CREATE = 0x8, 0x4000, 0x100
FAN_RENAME, FAN_ONDIR = 0x10000000, 0x40000000
INFO_FID, INFO_DFID_NAME, INFO_OLD_DFID_NAME, INFO_NEW_DFID_NAME = 1, 2, 10, 12
AT_FDCWD = -100
O_PATH = 0o10000000
_META = struct.Struct("=IBBHQii")
_INFO = struct.Struct("=BBH")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]


def _oserror(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


class FanotifySource:
    name = "files"

    def __init__(
        self, table: ProcessTable, domain: str, max_hash_bytes: int = 64 << 20, exec_wait_s: float = 0.5,
        force_classic: bool = False,
    ) -> None:
        # Filesystems without file handles (exFAT and NTFS sticks, some FUSE) refuse FID-mode
        # marks: those mounts get a classic mount mark in a second group, which sees closes after
        # writing (with the file open, so it is hashed) but not creations.
        self.classic_fd: int | None = None
        self.force_classic = force_classic  # tests: the fallback on a filesystem that has handles
        self.table = table
        # How long to wait for the exec source to record a writer that already exited (0 when
        # no exec source runs: nobody would record it).
        self.exec_wait_s = exec_wait_s
        self.domain = domain
        self.max_hash_bytes = max_hash_bytes
        self.lock = threading.Lock()
        self.fd: int | None = None
        self.mask = FAN_CREATE | FAN_CLOSE_WRITE | FAN_RENAME
        self.mounts: dict[str, Mount] = {}
        self.created: OrderedDict[str, None] = OrderedDict()  # names created, not yet closed
        self.overflows = 0

    def _open(self) -> int:
        with self.lock:
            if self.fd is None:
                flags = FAN_CLOEXEC | FAN_NONBLOCK | FAN_CLASS_NOTIF | FAN_REPORT_FID | FAN_REPORT_DIR_FID | FAN_REPORT_NAME
                fd = _libc.fanotify_init(flags, os.O_RDONLY | os.O_LARGEFILE)
                if fd < 0:
                    raise _oserror("fanotify_init")
                self.fd = fd
            return self.fd

    def _open_classic(self) -> int:
        with self.lock:
            if self.classic_fd is None:
                fd = _libc.fanotify_init(FAN_CLOEXEC | FAN_NONBLOCK | FAN_CLASS_NOTIF, os.O_RDONLY | os.O_LARGEFILE)
                if fd < 0:
                    raise _oserror("fanotify_init")
                self.classic_fd = fd
            return self.classic_fd

    def watch(self, m: Mount) -> None:
        fd = self._open()
        path = m.mount_point.encode()
        flags = FAN_MARK_ADD | FAN_MARK_FILESYSTEM
        if self.force_classic or _libc.fanotify_mark(fd, flags, self.mask, AT_FDCWD, path) < 0:
            err_no = errno.EOPNOTSUPP if self.force_classic else ctypes.get_errno()
            if err_no == errno.EINVAL and self.mask & FAN_RENAME:
                self.mask &= ~FAN_RENAME  # kernel before 5.17: no rename events
                return self.watch(m)
            if err_no in (errno.EOPNOTSUPP, errno.ENODEV, errno.EXDEV):
                return self._watch_classic(m)
            err = _oserror(f"fanotify_mark {m.mount_point}")
            log.error("cannot watch files on %s: %s", m.mount_point, err)
            return
        self.mounts[m.mount_point] = m
        log.info("watching file writes on %s", m.mount_point)

    def _watch_classic(self, m: Mount) -> None:
        fd = self._open_classic()
        if _libc.fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_CLOSE_WRITE, AT_FDCWD, m.mount_point.encode()) < 0:
            log.error("cannot watch files on %s: %s", m.mount_point, _oserror("fanotify_mark"))
            return
        log.warning(
            "%s (%s) has no file handles for fanotify: watching writes only, reported as FileModified"
            " (creation cannot be told from modification there)", m.mount_point, m.fstype,
        )

    def unwatch(self, m: Mount) -> None:
        # The kernel drops a filesystem mark with its superblock; nothing to undo by hand.
        self.mounts.pop(m.mount_point, None)

    def _dir_path(self, fsid_handle: bytes) -> str | None:
        """Path of the directory whose (fsid, file_handle) fanotify reported."""
        handle = fsid_handle[8:]
        for mp in list(self.mounts):
            try:
                mfd = os.open(mp, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            try:
                dfd = _libc.open_by_handle_at(mfd, handle, O_PATH)
                if dfd < 0:
                    continue
                try:
                    return os.readlink(f"/proc/self/fd/{dfd}")
                finally:
                    os.close(dfd)
            finally:
                os.close(mfd)
        return None

    def parse(self, data: bytes) -> Iterator[tuple[int, int, str | None, str | None]]:
        """(mask, pid, path, old path) per event."""
        off = 0
        while off + _META.size <= len(data):
            ev_len, _v, _r, meta_len, mask, _fd, pid = _META.unpack_from(data, off)
            names: dict[int, str | None] = {}
            p = off + meta_len
            while p + _INFO.size <= off + ev_len:
                itype, _pad, ilen = _INFO.unpack_from(data, p)
                if ilen == 0:
                    break
                if itype in (INFO_DFID_NAME, INFO_OLD_DFID_NAME, INFO_NEW_DFID_NAME):
                    hbytes = struct.unpack_from("=I", data, p + 4 + 8)[0]
                    end = p + 4 + 8 + 8 + hbytes
                    name = data[end : p + ilen].split(b"\0", 1)[0].decode(errors="surrogateescape")
                    d = self._dir_path(data[p + 4 : end])
                    names[itype] = None if d is None else os.path.join(d, name)
                p += ilen
            path = names.get(INFO_NEW_DFID_NAME) or names.get(INFO_DFID_NAME)
            yield mask, pid, path, names.get(INFO_OLD_DFID_NAME)
            off += ev_len

    def _hashes(self, path: str) -> tuple[str, str, str, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        if st.st_size > self.max_hash_bytes:
            return None
        return self.table.hashes.of_path(path)

    def to_event(self, mask: int, pid: int, path: str | None, old: str | None) -> Event | None:
        if path is None or mask & FAN_ONDIR:
            return None
        if mask & FAN_RENAME:
            action = FILE_RENAMED
        elif mask & FAN_CLOSE_WRITE:
            action = FILE_CREATED if (mask & FAN_CREATE or path in self.created) else FILE_MODIFIED
            self.created.pop(path, None)
        elif mask & FAN_CREATE:
            self.created[path] = None  # reported at close, with its content's hashes
            while len(self.created) > 4096:
                self.created.popitem(last=False)
            return None
        else:
            return None
        info = self.table.get(pid, wait_s=self.exec_wait_s)
        parent = self.table.get(info.ppid) if info.ppid else None
        row = file_event(
            action, path, info, parent, self.domain,
            hashes=None if action == FILE_RENAMED and os.path.isdir(path) else self._hashes(path),
            previous_path=old,
        )
        return Event("DeviceFileEvents", row)

    def classic_events(self, data: bytes) -> Iterator[Event]:
        """Events of the classic group: each carries an open descriptor on the written file."""
        off = 0
        while off + _META.size <= len(data):
            ev_len, _v, _r, _meta_len, mask, fd, pid = _META.unpack_from(data, off)
            off += ev_len
            if fd < 0:
                if mask & FAN_Q_OVERFLOW:
                    self._overflow()
                continue
            try:
                path = os.readlink(f"/proc/self/fd/{fd}")
                st = os.fstat(fd)
                hashes = self.table.hashes.of_fd(fd) if st.st_size <= self.max_hash_bytes else None
            except OSError:
                continue
            finally:
                os.close(fd)
            info = self.table.get(pid, wait_s=self.exec_wait_s)
            parent = self.table.get(info.ppid) if info.ppid else None
            extra = {"FanotifyMode": "mount mark: this filesystem has no file handles, so a new file is reported as FileModified"}
            yield Event("DeviceFileEvents", file_event(FILE_MODIFIED, path, info, parent, self.domain, hashes, extra=extra))

    def _overflow(self) -> None:
        self.overflows += 1
        log.warning("file events lost: fanotify queue overflow (%d so far)", self.overflows)

    def events(self, stop: threading.Event) -> Iterator[Event]:
        fd = self._open()
        try:
            while not stop.is_set():
                fds = [fd] if self.classic_fd is None else [fd, self.classic_fd]
                ready, _, _ = select.select(fds, [], [], 0.5)
                for r in ready:
                    try:
                        data = os.read(r, 256 * 1024)
                    except BlockingIOError:
                        continue
                    if r != fd:
                        yield from self.classic_events(data)
                        continue
                    for mask, pid, path, old in self.parse(data):
                        if mask & FAN_Q_OVERFLOW:
                            self._overflow()
                            continue
                        ev = self.to_event(mask, pid, path, old)
                        if ev is not None:
                            yield ev
        finally:
            with self.lock:
                for attr in ("fd", "classic_fd"):
                    if getattr(self, attr) is not None:
                        os.close(getattr(self, attr))
                        setattr(self, attr, None)
