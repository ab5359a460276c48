# Builds a test archive from a JSON spec: argv[1] spec file, argv[2] output.
import gzip, io, json, struct, sys, tarfile, zlib

spec = json.load(open(sys.argv[1]))
FORMATS = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT, "ustar": tarfile.USTAR_FORMAT}
TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
         "hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
         "fifo": tarfile.FIFOTYPE}


def b(s):
    return s.encode("utf-8", "surrogateescape")


def pad(data):
    return data + bytes(-len(data) % 512)


def header(name, typeflag, size, link=b"", mode=0o644, gnu=False, fields=(), v7=False):
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"%07o\0" % mode
    h[108:116] = b"%07o\0" % 0
    h[116:124] = b"%07o\0" % 0
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % 0
    h[156:157] = typeflag
    h[157:157 + len(link)] = link
    if not v7:
        h[257:265] = b"ustar  \0" if gnu else b"ustar\x0000"
    for off, val in fields:
        h[off:off + len(val)] = val
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def pax_records(records):
    out = b""
    for key, value in records:
        body = b" " + b(key) + b"=" + b(value) + b"\n"
        n = len(body) + 1
        while len(str(n)) + len(body) != n:
            n += 1
        out += str(n).encode() + body
    return out


def raw_entry(e):
    out = b""
    if "pax" in e:
        recs = pax_records(e["pax"])
        out += header(b"PaxHeader", b"x", len(recs)) + pad(recs)
    if "gnu_long" in e:
        ln = b(e["gnu_long"]) + b"\0"
        out += header(b"././@LongLink", b"L", len(ln), gnu=True) + pad(ln)
    data = b(e.get("data", ""))
    size = e.get("header_size", len(data))
    fields = []
    gnu = False
    if "sparse_realsize" in e:
        # One sparse block at the very end, no data: the file is all holes.
        real = e["sparse_realsize"]
        fields = [(386, b"%011o\0" % real), (398, b"%011o\0" % 0), (483, b"%011o\0" % real)]
        gnu = True
    name = b(e["name"])[:100]
    out += header(name, b(e.get("type", "0")), size, link=b(e.get("link", "")),
                  mode=e.get("mode", 0o644), gnu=gnu, fields=fields, v7=e.get("v7", False))
    if not e.get("no_data"):
        out += pad(data)
    return out


buf = io.BytesIO()
t = tarfile.open(fileobj=buf, mode="w", format=FORMATS[spec.get("format", "pax")],
                 pax_headers=spec.get("global", {}))
for e in spec["entries"]:
    kind = e.get("kind", "file")
    if kind == "raw":
        raw = raw_entry(e)
        t.fileobj.write(raw)
        t.offset += len(raw)
        continue
    ti = tarfile.TarInfo(e["name"])
    ti.type = TYPES[kind]
    ti.mode = e.get("mode", 0o755 if kind == "dir" else 0o644)
    ti.uid, ti.gid = e.get("uid", 0), e.get("gid", 0)
    ti.uname, ti.gname = e.get("uname", ""), e.get("gname", "")
    ti.linkname = e.get("link", "")
    data = b(e.get("data", "")) if kind == "file" else b""
    if "zeros" in e:
        data = bytes(e["zeros"])
    ti.size = len(data)
    t.addfile(ti, io.BytesIO(data) if kind == "file" else None)
if spec.get("end", True):
    t.close()
tar = buf.getvalue()

if spec.get("gzip", True):
    # A raw deflate stream: the tar, then `zero_mib` MiB of zeros made of one
    # fully flushed segment repeated (a bomb in milliseconds).
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = c.compress(tar) + c.flush(zlib.Z_FULL_FLUSH)
    crc, size = zlib.crc32(tar), len(tar)
    zero_mib = spec.get("zero_mib", 0)
    if zero_mib:
        mib = bytes(1 << 20)
        seg_c = zlib.compressobj(9, zlib.DEFLATED, -15)
        seg = seg_c.compress(mib) + seg_c.flush(zlib.Z_FULL_FLUSH)
        body += seg * zero_mib
        for _ in range(zero_mib):
            crc = zlib.crc32(mib, crc)
        size += zero_mib << 20
    body += zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    out = (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + body
           + struct.pack("<II", crc & 0xffffffff, size & 0xffffffff))
    if "second_member" in spec:
        out += gzip.compress(b(spec["second_member"]), mtime=0)
    out += b(spec.get("after_gzip", ""))
else:
    out = tar
open(sys.argv[2], "wb").write(out)
