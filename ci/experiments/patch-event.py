#!/usr/bin/env python3
"""Rewrites one event of a (stopped) server's binlog file in place, keeping its size, and fixes its
CRC32: the way the experiments of docs/design/provisioning-gtid.md send a real replica events that
no server writes itself.
  patch-event.py FILE gtid-list FLAGS D-S-N   the file's Gtid_list: one entry D-S-N, FLAGS in bits 28-31
  patch-event.py FILE query OLD NEW           the Query event whose text is OLD: text NEW (same length)
"""
import struct, sys, zlib

def events(buf):
    pos = 4
    while pos + 19 <= len(buf):
        size = struct.unpack_from('<I', buf, pos + 9)[0]
        yield pos, buf[pos + 4], size
        pos += size

def fix_crc(buf, pos, size):
    struct.pack_into('<I', buf, pos + size - 4, zlib.crc32(bytes(buf[pos:pos + size - 4])) & 0xffffffff)

path, what = sys.argv[1], sys.argv[2]
buf = bytearray(open(path, 'rb').read())
done = False
for pos, kind, size in events(buf):
    if what == 'gtid-list' and kind == 163:
        count = struct.unpack_from('<I', buf, pos + 19)[0] & 0x0fffffff
        assert count == 1, f'the Gtid_list has {count} entries; want a file whose list has one'
        d, s, n = (int(x) for x in sys.argv[4].split('-'))
        struct.pack_into('<IIIQ', buf, pos + 19, 1 | (int(sys.argv[3], 0) << 28), d, s, n)
        fix_crc(buf, pos, size); done = True; break
    if what == 'query' and kind == 2:
        old, new = sys.argv[3].encode(), sys.argv[4].encode()
        assert len(old) == len(new), 'NEW must be as long as OLD'
        body = buf[pos + 19:pos + size - 4]
        if body.endswith(old):
            at = pos + size - 4 - len(old)
            buf[at:at + len(old)] = new
            fix_crc(buf, pos, size); done = True; break
if not done:
    sys.exit(f'{path}: no such event to patch')
open(path, 'wb').write(buf)
