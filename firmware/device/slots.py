# Persistent OTA state and A/B directory slots. Shared by boot.py (slot selection, boot counter) and the
# application (confirm, record rolled-back versions, queue events for MQTT).
#
# ota_state.json:
#   active   slot holding the running bundle ("a" / "b" under fw/; "" = files flat in the root)
#   version  firmware version of the active slot
#   pending  null, {"version", "slot"} for a bundle not yet confirmed, or {"version", "image": label}
#   tries    boots of the pending bundle slot so far (boot.py counts, the app's health check resets)
#   bad      versions that were rolled back on this device: never downloaded again
#   sv       the highest security version confirmed here: a release below it is never installed
#   events   OTA events that happened while offline (booted / rolled_back / confirmed), sent after connect
#   boot     why this boot happened from the OTA point of view: normal / ota / rollback
# Writes go to a temporary file renamed over the old one, so a power cut leaves the old or the new state.
import json
import os

STATE = "ota_state.json"
# the slot directories' parent. Not "slots": MicroPython imports a directory as a (namespace) package
# before it looks for slots.py/.mpy, so `import slots` in boot.py would find the folder after the first
# update and the board would no longer select its slot (found running the bundle on the MicroPython VM)
SLOTS = "fw"
MAX_TRIES = 2  # boots a new bundle gets to confirm itself before boot.py falls back
MAX_BAD = 16


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def default_state(version=None):
    return {"active": "", "version": version, "pending": None, "tries": 0, "bad": [], "events": [], "boot": "normal", "sv": 0}


def load(root=""):
    path = root + STATE
    for p in (path, path + ".tmp"):
        try:
            with open(p) as f:
                st = json.load(f)
            if isinstance(st, dict):
                base = default_state()
                base.update(st)
                return base
        except (OSError, ValueError):
            pass
    return default_state()


def save(st, root=""):
    path = root + STATE
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(st, f)
    replace_file(tmp, path)  # load() falls back to .tmp if a cut leaves only that


# ---- the flash-file helpers the firmware shares (state, twin document, certificates, downloads) --------


def remove_file(path):
    """Remove a file that may not be there."""
    try:
        os.remove(path)
    except OSError:
        pass


def replace_file(tmp, path):
    """Rename tmp over path. FAT cannot rename over an existing file: there path is removed first, and a
    power cut in between leaves only tmp."""
    try:
        os.rename(tmp, path)
    except OSError:
        remove_file(path)
        os.rename(tmp, path)


def slot_dir(slot, root=""):
    return root + SLOTS + "/" + slot if slot else (root[:-1] if root.endswith("/") else root or ".")


def inactive(st):
    return "b" if st.get("active") == "a" else "a"


def add_event(st, event, version=None, reason=None):
    e = {"event": event}
    if version:
        e["version"] = version
    if reason:
        e["reason"] = reason
    st["events"].append(e)
    del st["events"][:-8]  # keep the last few only


def mark_bad(st, version):
    if version and version not in st["bad"]:
        st["bad"].append(version)
        del st["bad"][:-MAX_BAD]


def select_boot_slot(root=""):
    """boot.py: decide which slot to run, counting boots of an unconfirmed bundle. Returns (dir, state)."""
    st = load(root)
    pending = st.get("pending")
    if pending and pending.get("slot"):
        st["tries"] = st.get("tries", 0) + 1
        complete = _exists(slot_dir(pending["slot"], root) + "/files.json")
        if st["tries"] > MAX_TRIES or not complete:
            # the new slot never confirmed itself (or is gone): fall back, never fetch that version again
            mark_bad(st, pending.get("version"))
            reason = "not confirmed after %d boots" % MAX_TRIES if complete else "slot %s incomplete" % pending["slot"]
            add_event(st, "rolled_back", pending.get("version"), reason)
            st["pending"] = None
            st["tries"] = 0
            st["boot"] = "rollback"
            save(st, root)
            return slot_dir(st["active"], root), st
        st["boot"] = "ota"
        save(st, root)
        return slot_dir(pending["slot"], root), st
    if st.get("boot") != "normal":
        st["boot"] = "normal"
        save(st, root)
    return slot_dir(st.get("active", ""), root), st


def set_pending_bundle(st, version, slot, root="", sv=0):
    _set_pending(st, {"version": version, "slot": slot}, root, sv)


def set_pending_image(st, version, label, root="", sv=0):
    _set_pending(st, {"version": version, "image": label}, root, sv)


def _set_pending(st, pending, root, sv):
    if sv:
        pending["sv"] = sv  # the signed security version, the floor once this release confirms itself
    st["pending"] = pending
    st["tries"] = 0
    save(st, root)


def confirm(st, root=""):
    """The running pending release passed its health check: make it the active one. True if it was pending."""
    pending = st.get("pending")
    if not pending:
        return False
    if pending.get("slot"):
        st["active"] = pending["slot"]
    st["version"] = pending.get("version", st.get("version"))
    # anti-rollback: once a release confirmed itself, nothing below its security version is installed
    st["sv"] = max(st.get("sv") or 0, pending.get("sv") or 0)
    st["pending"] = None
    st["tries"] = 0
    add_event(st, "confirmed", st["version"])
    save(st, root)
    return True


def image_rolled_back(st, running_label, root=""):
    """After boot with a pending image: True (and state updated) if the bootloader went back to the old one."""
    pending = st.get("pending")
    if not pending or not pending.get("image"):
        return False
    if pending["image"] == running_label:
        return False
    mark_bad(st, pending.get("version"))
    add_event(st, "rolled_back", pending.get("version"), "bootloader rolled back the image")
    st["pending"] = None
    st["boot"] = "rollback"
    save(st, root)
    return True


def read_index(slot, root=""):
    """{path: digest} of the files installed in a slot (written by the OTA client), {} if unknown."""
    try:
        with open(slot_dir(slot, root) + "/files.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_index(slot, files, root=""):
    """Generator: files.json of a slot from (path, digest, ...) items, written one file at a time (no dict
    of them all) and yielding after each, so the caller can let the collector have that file's strings."""
    with open(slot_dir(slot, root) + "/files.json", "w") as f:
        sep = "{"
        for item in files:
            f.write(sep)
            json.dump(item[0], f)
            f.write(": ")
            json.dump(item[1], f)
            sep = ", "
            yield 100
        f.write("}" if sep == ", " else "{}")


def clear_dir(path):
    try:
        names = os.listdir(path)
    except OSError:
        _makedirs(path)
        return
    for name in names:
        p = path + "/" + name
        try:
            os.remove(p)
        except OSError:
            clear_dir(p)
            os.rmdir(p)


def _makedirs(path):
    cur = ""
    for part in path.split("/"):
        if not part:
            cur = "/"
            continue
        cur = cur + part if cur in ("", "/") else cur + "/" + part
        if not _exists(cur):
            os.mkdir(cur)
