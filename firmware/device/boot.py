# Runs first on every reset. Picks the firmware slot (A/B directories under slots/) and counts boots of
# a release that has not confirmed itself yet; after slots.MAX_TRIES unconfirmed boots it falls back to
# the previous slot and remembers the version as bad. Kept tiny and stable: OTA never replaces it.
import sys

try:
    import slots

    _dir, _state = slots.select_boot_slot()
    if _dir not in ("", "."):
        sys.path.insert(0, _dir)
    print("weatherfleet: boot slot", _dir, "(%s)" % _state.get("boot"))
except Exception as e:  # a broken state file must never stop the board from booting
    print("weatherfleet: boot: slot selection failed:", e)
