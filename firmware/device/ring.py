# A fixed-size ring of the last N encoded measurements, kept while the broker is unreachable and
# published oldest first on reconnect. All storage is allocated once; when full, the oldest entry is
# overwritten and counted in `dropped`.
import array


class Ring:
    def __init__(self, slots, slot_size):
        self.slots = slots
        self.slot_size = slot_size
        self.buf = bytearray(slots * slot_size)
        mv = memoryview(self.buf)
        self.views = [mv[i * slot_size : (i + 1) * slot_size] for i in range(slots)]
        self.lengths = array.array("H", bytes(2 * slots))
        self.head = 0  # oldest
        self.count = 0
        self.dropped = 0

    def __len__(self):
        return self.count

    def slot_for_write(self):
        """The buffer the next entry is encoded into (commit(n) makes it an entry)."""
        return self.views[(self.head + self.count) % self.slots]

    def commit(self, n):
        if n <= 0:
            return
        if n > self.slot_size:
            raise ValueError("entry larger than a slot")
        i = (self.head + self.count) % self.slots
        self.lengths[i] = n
        if self.count == self.slots:
            self.head = (self.head + 1) % self.slots
            self.dropped += 1
        else:
            self.count += 1

    def push(self, data):
        view = self.slot_for_write()
        n = len(data)
        if n > self.slot_size:
            raise ValueError("entry larger than a slot")
        for i in range(n):
            view[i] = data[i]
        self.commit(n)

    def peek(self):
        """(buffer, length) of the oldest entry, or (None, 0)."""
        if not self.count:
            return None, 0
        return self.views[self.head], self.lengths[self.head]

    def pop(self):
        if self.count:
            self.head = (self.head + 1) % self.slots
            self.count -= 1
