"""Read a packet capture and check what crossed the wire: TCP streams, TLS records, plaintext.

Small on purpose: a pcap file of Ethernet frames (what tcpdump writes on a bridge), IPv4 and
TCP only, streams reassembled by sequence number (a bridge of veth cables neither drops nor
reorders). Enough to prove that nothing but TLS records went between the lab's hosts.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ETHERNET, IPV4, TCP = 1, 0x0800, 6
#: TLS record content types: change_cipher_spec, alert, handshake, application_data.
TLS_CONTENT_TYPES = {20, 21, 22, 23}


@dataclass
class Segment:
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    flags: int
    payload: bytes


@dataclass
class Capture:
    segments: list[Segment] = field(default_factory=list)
    other_ipv4: list[tuple[str, str, int]] = field(default_factory=list)  # (src, dst, protocol)

    def streams(self) -> dict[tuple[tuple[str, int], tuple[str, int]], bytes]:
        """Each direction of each TCP connection, reassembled (payload bytes in order)."""
        first: dict[tuple[tuple[str, int], tuple[str, int]], int] = {}
        chunks: dict[tuple[tuple[str, int], tuple[str, int]], dict[int, bytes]] = defaultdict(dict)
        for seg in self.segments:
            key = (seg.src, seg.dst)
            if seg.flags & 0x02:  # SYN: the payload starts one past its sequence number
                first[key] = seg.seq + 1
            if seg.payload:
                chunks[key][seg.seq] = seg.payload
        out = {}
        for key, parts in chunks.items():
            base = first.get(key, min(parts))
            data = bytearray()
            for seq in sorted(parts):
                offset = (seq - base) % 2**32
                data[offset : offset + len(parts[seq])] = parts[seq]
            out[key] = bytes(data)
        return out


def _ip(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def read_pcap(path: Path) -> Capture:
    """IPv4/TCP segments of a classic pcap file of Ethernet frames."""
    data = path.read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path} is not a pcap file")
    (link,) = struct.unpack(endian + "I", data[20:24])
    if link != ETHERNET:
        raise ValueError(f"{path}: link type {link}, expected Ethernet")
    capture = Capture()
    pos = 24
    while pos + 16 <= len(data):
        _, _, length, _ = struct.unpack(endian + "IIII", data[pos : pos + 16])
        frame = data[pos + 16 : pos + 16 + length]
        pos += 16 + length
        if len(frame) < 34 or struct.unpack("!H", frame[12:14])[0] != IPV4:
            continue
        ip = frame[14:]
        header = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        protocol, src, dst = ip[9], _ip(ip[12:16]), _ip(ip[16:20])
        if protocol != TCP:
            capture.other_ipv4.append((src, dst, protocol))
            continue
        tcp = ip[header:total]
        sport, dport, seq = struct.unpack("!HHI", tcp[:8])
        offset = (tcp[12] >> 4) * 4
        capture.segments.append(Segment((src, sport), (dst, dport), seq, tcp[13], tcp[offset:]))
    return capture


def tls_record_problem(stream: bytes) -> str | None:
    """Why ``stream`` is not a sequence of TLS records, or ``None`` (a last record cut short
    by the end of the capture is fine)."""
    pos = 0
    while pos + 5 <= len(stream):
        content, major, length = (
            stream[pos],
            stream[pos + 1],
            int.from_bytes(stream[pos + 3 : pos + 5]),
        )
        if content not in TLS_CONTENT_TYPES or major != 3:
            return f"byte {pos}: {stream[pos : pos + 16]!r} does not start a TLS record"
        pos += 5 + length
    return None
