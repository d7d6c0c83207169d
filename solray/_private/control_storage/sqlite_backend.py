"""The control store's default storage: one SQLite file in the session
directory. SQLite comes with Python, so a head needs nothing installed; WAL
mode makes each batch one append and fsync, not a rewrite of pages."""

from __future__ import annotations

import os
import sqlite3

from solray._private.control_storage import TABLES, StorageError


class SQLiteStorage:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.description = f"the control store's SQLite file {self.path}"
        self._db: sqlite3.Connection | None = None  # opened by load()

    def _open(self) -> sqlite3.Connection:
        try:
            # The writer thread is its only user after load() (Persistence).
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as e:
            raise StorageError(self._unreadable(e)) from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS entries (tbl TEXT NOT NULL, key BLOB NOT NULL, "
                "value BLOB NOT NULL, PRIMARY KEY (tbl, key))"
            )
        except sqlite3.Error as e:
            db.close()
            raise StorageError(self._unreadable(e)) from None
        return db

    def _unreadable(self, e: Exception) -> str:
        return (
            f"{self.description} cannot be read ({e}). Move it away (or delete it, "
            "forgetting the cluster's actors, placement groups and key-value store) "
            "to start the control store empty."
        )

    def load(self) -> dict[str, dict[bytes, bytes]]:
        tables: dict[str, dict[bytes, bytes]] = {t: {} for t in TABLES}
        if self._db is None:
            self._db = self._open()
        try:
            for tbl, key, value in self._db.execute("SELECT tbl, key, value FROM entries"):
                tables.setdefault(tbl, {})[bytes(key)] = bytes(value)
        except sqlite3.Error as e:
            raise StorageError(self._unreadable(e)) from None
        return tables

    def write(self, batch: dict[tuple[str, bytes], bytes | None]) -> None:
        puts = [(t, k, v) for (t, k), v in batch.items() if v is not None]
        deletes = [(t, k) for (t, k), v in batch.items() if v is None]
        self._db.execute("BEGIN")  # one transaction
        try:
            if puts:
                self._db.executemany(
                    "INSERT OR REPLACE INTO entries (tbl, key, value) VALUES (?, ?, ?)", puts
                )
            if deletes:
                self._db.executemany("DELETE FROM entries WHERE tbl = ? AND key = ?", deletes)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def drop(self) -> None:
        self.close()
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(self.path + suffix)
            except FileNotFoundError:
                pass
