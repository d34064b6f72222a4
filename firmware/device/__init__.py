# Not device code: this marker makes firmware/device the data package weatherfleet.firmware.device, so the
# sources travel inside the wheel and `weatherfleet firmware build` finds them wherever it is installed.
# The build never ships it (firmware/build.py skips dunder files).
