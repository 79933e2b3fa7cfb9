"""Tables. Rows are ordered by ``seq`` (insertion order), never by timestamps."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ContainerRow(Base):
    __tablename__ = "containers"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(256))
    image: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    memory_limit: Mapped[str] = mapped_column(String(8))
    cpu_limit: Mapped[float] = mapped_column(Float)
    expires_minutes: Mapped[int] = mapped_column(Integer)
    network_policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_active_at: Mapped[int] = mapped_column(BigInteger)


class ContainerFileRow(Base):
    __tablename__ = "container_files"
    __table_args__ = (UniqueConstraint("container_id", "path"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    container_id: Mapped[str] = mapped_column(ForeignKey("containers.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(4096))
    bytes: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)
