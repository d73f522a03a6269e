"""The heap's peak from `heaptrack_print --print-peaks`, per connection, as a markdown table.

Usage: heap_report.py PEAKS_TXT LOAD_JSON ROWS (tests/bench/heap runs it).
heaptrack prints sizes with decimal prefixes (1K = 1000 bytes); each breakdown entry is an
allocation site and the bytes it held at the peak.
"""

import json
import re
import sys

ENTRY = re.compile(r"^\s*([0-9.]+)([KMG]?)B? (peak memory )?consumed over (\d+) calls from")
SCALE = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}
# Frames that name who allocated: Otter's code and the crates it uses, not the allocator's.
WHO = re.compile(r"^at (?:\S*/)?((?:signaling|tests)/src/\S+|[a-z0-9_-]+-\d+\.\d+\.\d+/src/\S+)")


def entries(lines):
    """(bytes, calls, top?, frames) for every entry of the peaks section."""
    found = []
    for i, line in enumerate(lines):
        m = ENTRY.match(line)
        if not m:
            continue
        frames = []
        for follow in lines[i + 1 :]:
            if ENTRY.match(follow) or not follow.strip():
                break
            w = WHO.match(follow.strip())
            if w and (not frames or frames[-1] != w.group(1)):
                frames.append(w.group(1))
        size = float(m.group(1)) * SCALE[m.group(2)]
        found.append((size, int(m.group(4)), bool(m.group(3)), frames))
    return found


def main():
    text = open(sys.argv[1]).read()
    load = json.load(open(sys.argv[2]))
    rows = int(sys.argv[3])
    peak = re.search(r"peak heap memory consumption: ([0-9.]+)([KMG]?)", text)
    if not peak:
        sys.exit("heap_report: no peak in heaptrack's output")
    connections = load["connected"]
    total = float(peak.group(1)) * SCALE[peak.group(2)]
    # The breakdown: the sub-entries (an allocation site each); a top entry without any is one.
    found = entries(text.split("\n"))
    parts = []
    for j, (size, calls, top, frames) in enumerate(found):
        has_subs = top and j + 1 < len(found) and not found[j + 1][2]
        if not has_subs:
            parts.append((size, calls, frames))
    parts.sort(key=lambda p: -p[0])
    print(f"Heap at its peak: {total / 1e6:.2f} MB, {total / connections:,.0f} bytes per connection "
          f"({connections} connected, rooms of {load['room_size']}).\n")
    print("| bytes per connection | allocations | allocated at (first frames of Otter's code or its crates) |")
    print("|---|---|---|")
    for size, calls, frames in parts[:rows]:
        # The innermost frame, and the first of Otter's own when that is further out.
        ours = next((f for f in frames if f.startswith(("signaling/", "tests/"))), None)
        shown = frames[:1] + ([ours] if ours and ours not in frames[:1] else [])
        where = " ← ".join(shown) or "(allocator only)"
        print(f"| {size / connections:,.0f} | {calls} | {where} |")


if __name__ == "__main__":
    main()
