#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target into corpus/<target>/.

Seeds are a handful of real-looking valid inputs and a few edge cases; the
protobuf ones are encoded here by hand (the wire format is small), so no
protobuf package is needed. Run from anywhere; it rewrites the seed files
it names and leaves other files alone.
"""
import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
UUID = "550e8400-e29b-41d4-a716-446655440000"
UUID2 = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
SHA = hashlib.sha256(b"hello").hexdigest()


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, v):
    return varint(num << 3) + varint(v)


def field_bytes(num, b):
    if isinstance(b, str):
        b = b.encode()
    return varint(num << 3 | 2) + varint(len(b)) + b


def packed(num, values):
    return field_bytes(num, b"".join(varint(v) for v in values))


def sidecar_key(uuid=UUID, kind=1, variant="grid@2x", fmt=1):
    return (field_bytes(1, uuid) + field_varint(2, kind) +
            field_bytes(3, variant) + field_varint(4, fmt))


def field_double(num, v):
    return varint(num << 3 | 1) + struct.pack("<d", v)


def family(name, ftype, metrics, help_text="what it counts"):
    """A sidecar.v1.MetricFamily; `metrics`: encoded Metric messages."""
    out = field_bytes(1, name) + field_bytes(2, help_text)
    if ftype:
        out += field_varint(3, ftype)
    for m in metrics:
        out += field_bytes(4, m)
    return out


def metric(labels=(), value=None, count=None, total=None, buckets=(),
           quantiles=()):
    out = b"".join(field_bytes(1, field_bytes(1, k) + field_bytes(2, v))
                   for k, v in labels)
    if value is not None:
        out += field_double(2, value)
    if count is not None:
        out += field_varint(3, count)
    if total is not None:
        out += field_double(4, total)
    for q, v in quantiles:
        out += field_bytes(5, field_double(1, q) + field_double(2, v))
    for bound, c in buckets:
        out += field_bytes(6, field_double(1, bound) + field_varint(2, c))
    return out


def hello(device=b"\x11" * 16):
    return (field_bytes(1, device) + field_varint(2, 3) +
            field_bytes(3, "10.0.0.2:7001") + field_bytes(4, "10.0.0.2:7002") +
            field_bytes(5, "laptop"))


def entry_batch(entries, variants, up_to_seq, mode=1, versions=None):
    """entries: (uuid bytes, kind, fmt, variant index, size, seq, removed
    [, generator version index]); `versions`: the batch's generator
    versions (None: no version column)."""
    msg = field_varint(2, mode) + field_varint(5, up_to_seq)
    msg += field_bytes(10, b"".join(e[0] for e in entries))
    msg += field_bytes(11, bytes(e[1] for e in entries))
    msg += field_bytes(12, bytes(e[2] for e in entries))
    msg += packed(13, [e[3] for e in entries])
    for v in variants:
        msg += field_bytes(14, v)
    msg += packed(15, [e[4] for e in entries])
    msg += field_bytes(16, b"".join(hashlib.sha256(bytes([i])).digest()
                                    for i in range(len(entries))))
    msg += packed(17, [e[5] for e in entries])
    msg += field_bytes(18, bytes(e[6] for e in entries))
    if versions is not None:
        msg += packed(19, [e[7] for e in entries])
        for v in versions:
            msg += field_bytes(20, v)
    return msg


def origin_info(device, generation, peer="", transfer="", sig=b"",
                head=b""):
    msg = field_bytes(1, device) + field_varint(2, generation)
    if peer:
        msg += field_bytes(3, peer)
    if transfer:
        msg += field_bytes(4, transfer)
    if sig:
        msg += field_bytes(6, sig)
    if head:
        msg += field_bytes(7, head)
    return msg


def state_hash(entries, variants, versions=None):
    """The state digest (services/availability/state_hash.h) of live
    entries given as in entry_batch, with distinct content ids."""
    buckets = {}
    for i, e in enumerate(entries):
        uuid, kind, fmt, vi, size, _seq, removed = e[:7]
        if removed:
            continue
        name = variants[vi].encode()
        version = versions[e[7]].encode() if versions is not None else b""
        leaf = (uuid + bytes([kind, fmt, len(name)]) + name +
                struct.pack(">Q", size) + hashlib.sha256(bytes([i])).digest() +
                bytes([len(version)]) + version)
        buckets[(uuid[0] << 8 | uuid[1]) >> 4] = leaf
    root = hashlib.sha256(b"sidecar-sync state v2")
    for b in range(4096):
        root.update(hashlib.sha256(buckets.get(b, b"")).digest())
    return root.digest()


def head(generation, max_seq, state, sig=b"sign"):
    """A Head; the fuzz target replaces the signature "sign" with a real
    one, so that the checks after the signature's are reached."""
    return (field_varint(1, generation) + field_varint(2, max_seq) +
            field_bytes(3, state) + field_bytes(4, sig))


def exchange_batch(device, generation, entries, variants, up_to_seq, mode,
                   first=False, last=False, hint=0, peer="", transfer="",
                   sig=b"", head=b"", versions=None):
    """One ExchangeResponse carrying an EntryBatch of `device`."""
    b = field_bytes(1, origin_info(device, generation, peer, transfer, sig,
                                   head))
    b += entry_batch(entries, variants, up_to_seq, mode, versions)
    if first:
        b += field_varint(3, 1)
    if last:
        b += field_varint(4, 1)
    if hint:
        b += field_varint(7, hint)
    return field_bytes(1, b)


def stream(*messages):
    """The exchange_receive input: each message with a 2-byte length."""
    return b"".join(struct.pack(">H", len(m)) + m for m in messages)


U1 = bytes.fromhex(UUID.replace("-", ""))
U2 = bytes.fromhex(UUID2.replace("-", ""))

def self_snapshot(entries, names, max_seq=10, floor=0, generation=7,
                  version=1, magic=b"SCOWNSNP"):
    """An own-origin snapshot file (services/availability/self_snapshot.h),
    little-endian; the fuzz target rewrites the CRC, so it is left zero.
    `entries`: (content byte, kind, format, variant id, size, seq, removed,
    version id); `names`: (is_variant, id, name)."""
    names_blob = b"".join(struct.pack("<HH", i, len(n)) + n.encode()
                          for v, i, n in names if v)
    names_blob += b"".join(struct.pack("<HH", i, len(n)) + n.encode()
                           for v, i, n in names if not v)
    header = struct.pack("<8sII16sQQQQQIIQ", magic, version, 88,
                         bytes(range(16)), generation, max_seq, floor,
                         len(entries), len(entries),
                         sum(1 for v, _, _ in names if v),
                         sum(1 for v, _, _ in names if not v),
                         len(names_blob))
    body = b""
    for c, kind, fmt, var, size, seq, removed, ver in entries:
        size_bits = (size | kind << 40 | fmt << 46 | int(removed) << 52 |
                     ver << 53)
        body += (bytes([c]) * 16 + hashlib.sha256(bytes([c])).digest() +
                 struct.pack("<QQ", size_bits, seq | var << 48))
    return header + names_blob + body + b"\0\0\0\0"


SEEDS = {
    "sidecar_key": {
        "uri_thumb": f"sidecar://{UUID}/thumbs/grid@2x.webp",
        "uri_kind_name": f"sidecar://{UUID2.upper()}/proxy/preview.mp4",
        "uri_msgpack": f"sidecar://{UUID}/embeddings/clip-vit.msgpack",
        "uri_dotted_variant": f"sidecar://{UUID}/ocr/page.1.txt",
        "uri_dotdot": f"sidecar://{UUID}/thumbs/../x.webp",
        "uri_four_parts": f"sidecar://{UUID}/thumbs/a/b.webp",
        "proto_key": sidecar_key(),
        "proto_splat": sidecar_key(UUID2, 7, "scene", 6),
        "proto_bad_variant": sidecar_key(variant="a\x01b"),
        "variant": "detail@1x",
        "uuid_bytes": U1,
    },
    "entry_batch": {
        "delta_two": entry_batch(
            [(U1, 1, 1, 0, 1024, 5, 0), (U2, 3, 2, 1, 1 << 30, 6, 1)],
            ["grid@2x", "preview"], 6),
        "snapshot_one": entry_batch([(U1, 4, 4, 0, 77, 1, 0)],
                                    ["clip-vit"], 1, mode=2),
        "empty": entry_batch([], [], 0),
        "seq_above_bound": entry_batch([(U1, 1, 1, 0, 1, 9, 0)],
                                       ["grid@1x"], 8),
        "columns_disagree": field_bytes(11, b"\x01\x01") + field_bytes(
            10, U1),
        "versions": entry_batch(
            [(U1, 1, 1, 0, 1024, 5, 0, 1), (U2, 1, 1, 0, 2048, 6, 0, 0)],
            ["grid@2x"], 6, versions=["", "thumbgen 1.2"]),
        "version_control_char": entry_batch(
            [(U1, 1, 1, 0, 1024, 5, 0, 0)], ["grid@2x"], 5,
            versions=["thumbgen\x011.2"]),
    },
    "exchange_receive": {
        # The sender (02..02) sends its own snapshot in two parts, then a
        # delta, then its summary.
        "own_snapshot_then_delta": stream(
            exchange_batch(b"\x02" * 16, 7, [(U1, 1, 1, 0, 10, 1, 0)],
                           ["grid@2x"], 2, 2, first=True, hint=2,
                           peer="10.0.0.2:7001", transfer="10.0.0.2:7002"),
            exchange_batch(b"\x02" * 16, 7, [(U2, 1, 1, 0, 11, 2, 0)],
                           ["grid@2x"], 2, 2, last=True),
            exchange_batch(b"\x02" * 16, 7, [(U1, 1, 1, 0, 12, 3, 1)],
                           ["grid@2x"], 3, 1),
            field_bytes(2, field_bytes(1, hello(b"\x02" * 16)) +
                        field_bytes(2, field_bytes(1, b"\x04" * 16) +
                                    field_varint(2, 1) + field_varint(3, 9)))),
        # A relay's unsigned new generation of a third member, and a relayed
        # address for it.
        "relayed_unsigned": stream(
            exchange_batch(b"\x06" * 16, 9, [(U1, 3, 2, 0, 5, 1, 0)],
                           ["detail@1x"], 1, 2, first=True, last=True,
                           sig=b"\x00" * 64),
            exchange_batch(b"\x06" * 16, 9, [(U2, 3, 2, 0, 5, 2, 0)],
                           ["detail@1x"], 2, 1, transfer="evil:443")),
        # A relay's new generation of a third member, signed (the target
        # signs "sign"), with the member's head: taken. Then relayed deltas
        # that do not make the state of their head: refused.
        "relayed_signed": stream(
            exchange_batch(b"\x06" * 16, 9, [(U1, 3, 2, 0, 5, 1, 0, 0)],
                           ["detail@1x"], 1, 2, first=True, last=True,
                           sig=b"sign", versions=["proxygen 3.1"],
                           head=head(9, 1, state_hash(
                               [(U1, 3, 2, 0, 5, 1, 0, 0)], ["detail@1x"],
                               ["proxygen 3.1"]))),
            exchange_batch(b"\x06" * 16, 9, [(U2, 3, 2, 0, 5, 2, 0)],
                           ["detail@1x"], 2, 1,
                           head=head(9, 2, b"\x00" * 32))),
        # Our own origin relayed back, a non-member, and a huge size hint.
        "self_stranger_hint": stream(
            exchange_batch(b"\x04" * 16, 1, [(U1, 1, 1, 0, 1, 1, 0)],
                           ["icon@1x"], 1, 2, first=True, last=True),
            exchange_batch(b"\x05" * 16, 1, [(U1, 1, 1, 0, 1, 1, 0)],
                           ["icon@1x"], 1, 1),
            exchange_batch(b"\x02" * 16, 3, [(U1, 1, 1, 0, 1, 1, 0)],
                           ["icon@1x"], 1, 2, first=True, hint=1 << 40)),
        "part_without_first": stream(
            exchange_batch(b"\x02" * 16, 3, [(U1, 1, 1, 0, 1, 1, 0)],
                           ["icon@1x"], 1, 2, last=True)),
    },
    "has_keys": {
        "two_keys": field_bytes(1, hello()) + field_bytes(2, sidecar_key()) +
        field_bytes(2, sidecar_key(UUID2, 3, "preview", 2)),
        "no_hello": field_bytes(2, sidecar_key(kind=5, variant="page",
                                               fmt=5)),
        "bad_kind": field_bytes(2, sidecar_key(kind=99)),
        "short_device": field_bytes(1, hello(b"\x01\x02")) +
        field_bytes(2, sidecar_key()),
    },
    "leaf_messages": {
        # A delegate's answer for 2 keys (first byte 4 = 2 << 1).
        "answer": b"\x04" + field_bytes(1, b"\x22" * 16) +
        field_bytes(1, b"\x44" * 16) +
        field_bytes(2, field_bytes(1, field_varint(1, 0) +
                                   field_varint(2, 1234) +
                                   field_bytes(3, bytes.fromhex(SHA)) +
                                   field_bytes(4, "thumbgen 1.2"))) +
        field_bytes(2, field_bytes(1, field_varint(1, 1) +
                                   field_varint(2, 99) +
                                   field_bytes(3, bytes.fromhex(SHA)))),
        "answer_non_member": b"\x02" + field_bytes(1, b"\x23" * 16) +
        field_bytes(2, field_bytes(1, field_varint(1, 0) +
                                   field_bytes(3, bytes.fromhex(SHA)))),
        "answer_bad_index": b"\x02" + field_bytes(1, b"\x22" * 16) +
        field_bytes(2, field_bytes(1, field_varint(1, 7) +
                                   field_bytes(3, bytes.fromhex(SHA)))),
        # Subscriptions (odd first byte).
        "subscription": b"\x01" + field_varint(1, 1) + field_varint(1, 5) +
        field_bytes(2, "grid@2x") + field_varint(3, 100000),
        "subscription_bad_kind": b"\x01" + field_varint(1, 99),
        "subscription_bad_variant": b"\x01" + field_varint(1, 1) +
        field_bytes(2, "../x"),
    },
    "read_request": {
        "whole": field_bytes(1, sidecar_key()),
        "range": field_bytes(1, sidecar_key(UUID2, 3, "preview", 2)) +
        field_varint(2, 4096) + field_varint(3, 65536) +
        field_varint(4, 1 << 20),
        "huge_offset": field_bytes(1, sidecar_key()) +
        field_varint(2, (1 << 64) - 1) + field_varint(3, 2),
        "tiny_chunk": field_bytes(1, sidecar_key()) + field_varint(4, 1),
        "bad_uuid": field_bytes(1, sidecar_key(uuid="not-a-uuid")),
    },
    "batch_read": {
        "three": field_bytes(1, sidecar_key()) +
        field_bytes(1, sidecar_key(variant="icon@1x")) +
        field_bytes(1, sidecar_key(UUID2, 2, "strip", 1)),
        "mixed": field_bytes(1, sidecar_key()) +
        field_bytes(1, sidecar_key(variant="..")) +
        field_bytes(1, sidecar_key(fmt=0)),
        "empty": b"",
    },
    "config": {
        "service": "# availability\nstate_dir = /var/lib/sidecar\n"
        "local_listen = unix:/run/sidecar/a.sock\n"
        "local_listen_allow_network = false\n",
        "types": "fuzz_int32 = -12\nfuzz_uint64=18446744073709551615\n"
        "fuzz_double = 2.5e-3\nfuzz_duration = 1h30m\n"
        "fuzz_list = a,b,,c\nfuzz_string = hello world  # comment\n",
        "crlf": "state_dir = /tmp/x\r\n\r\n  # only a comment\r\n",
        "no_equals": "state_dir /tmp\n",
        "unknown": "no_such_flag = 1\n",
        "bad_value": "fuzz_int32 = 99999999999\n",
    },
    "batch_file": {
        "two": f"# uri size sha256\nsidecar://{UUID}/thumbs/grid@2x.webp"
        f" 1024 {SHA}\nsidecar://{UUID2}/proxies/preview.mp4\t5\t{SHA}\n",
        "blank_lines": f"\n  \nsidecar://{UUID}/ocr/page.txt 0 {SHA.upper()}",
        "bad_size": f"sidecar://{UUID}/thumbs/grid@2x.webp -1 {SHA}\n",
        "bad_sha": f"sidecar://{UUID}/thumbs/grid@2x.webp 1 abc\n",
        "two_fields": f"sidecar://{UUID}/thumbs/grid@2x.webp 1\n",
    },
    "self_snapshot": {
        "three": self_snapshot(
            [(1, 1, 1, 5, 1000, 3, False, 0),
             (2, 1, 1, 5, 2000, 9, False, 2),
             (3, 1, 1, 5, 0, 10, True, 0)],
            [(True, 5, "grid@2x"), (False, 0, ""),
             (False, 2, "thumbgen 1.2")]),
        "empty": self_snapshot([], [], max_seq=0),
        "unsorted": self_snapshot(
            [(2, 1, 1, 5, 1000, 3, False, 0),
             (1, 1, 1, 5, 2000, 4, False, 0)],
            [(True, 5, "grid@2x"), (False, 0, "")]),
        "unnamed_variant": self_snapshot(
            [(1, 1, 1, 9, 1000, 3, False, 0)],
            [(True, 5, "grid@2x"), (False, 0, "")]),
        "seq_above_max": self_snapshot(
            [(1, 1, 1, 5, 1000, 11, False, 0)],
            [(True, 5, "grid@2x"), (False, 0, "")]),
        "bad_magic": self_snapshot([], [], magic=b"NOTASNAP"),
    },
    "metrics_wire": {
        "counter_gauge": field_bytes(1, family(
            "grpc_server_handled_total", 1,
            [metric([("grpc_method", "Read"), ("grpc_code", "OK")], 12.0),
             metric([("grpc_method", "Read"), ("grpc_code", "NOT_FOUND")],
                    1.0)])) +
        field_bytes(1, family("sidecar_peers", 2,
                              [metric([("state", "online")], 3.0)])),
        "histogram": field_bytes(1, family(
            "sidecar_fetch_seconds", 4,
            [metric([("priority", "interactive")], count=3, total=0.5,
                    buckets=[(0.1, 1), (1.0, 3), (float("inf"), 3)])])),
        "summary": field_bytes(1, family(
            "rpc_seconds", 3,
            [metric(count=2, total=1.5, quantiles=[(0.5, 0.7), (0.9, 0.8)])])),
        "help_newline": field_bytes(1, family(
            "x_total", 1, [metric(value=1.0)],
            "x\nfake_total 1e9")),
        "label_quote": field_bytes(1, family(
            "y", 2, [metric([("l", 'a"} 1\nz 2')], 1.0)])),
        "reserved_label": field_bytes(1, family(
            "z", 2, [metric([("member", "someone")], 1.0)])),
        "bad_buckets": field_bytes(1, family(
            "h", 4, [metric(count=3, buckets=[(1.0, 3), (0.5, 1)])])),
    },
    "pairing_code": {
        "typed": "7KQ2-M9XD-4HTV-B1ZR",
        "lower_spaces": "7kq2 m9xd 4htv b1zr",
        "aliases": "OIL0-0000-0000-0000",
        "short": "7KQ2-M9XD",
        "letter_u": "7KQ2-M9XD-4HTV-B1ZU",
        "raw": bytes(range(10)),
    },
}


def main():
    for target, seeds in SEEDS.items():
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            if isinstance(data, str):
                data = data.encode()
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
