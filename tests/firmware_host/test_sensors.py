"""Sensor emulators: datasheet worked examples, protocol details, and round trips through the real device
drivers (firmware/device/bme280.py, scd30.py, sds011.py) running on an emulated board."""

from __future__ import annotations

import json
import random

import pytest

from devicesim.sensors import SCD30, SDS011, Environment
from devicesim.sensors import bme280 as bme
from devicesim.sensors.scd30 import crc8, float_words, words
from devicesim.sensors.sds011 import checksum, command_frame, data_frame

from .conftest import device_file


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_bme280_compensation_matches_the_datasheet_example() -> None:
    # Bosch BMP280/BME280 datasheet worked example: adc_T 519888 -> 25.08 degC, adc_P 415148 -> 100653.27 Pa
    cal = bme.Calibration()
    t_fine, temperature = bme.compensate_temperature(519888, cal)
    assert (t_fine, temperature) == (128422, 2508)
    assert bme.compensate_pressure(415148, t_fine, cal) / 256 == pytest.approx(100653.27, abs=0.05)


@pytest.mark.parametrize("seed", range(5))
def test_bme280_raw_values_invert_the_compensation(seed: int) -> None:
    rng = random.Random(seed)
    cal = bme.Calibration(T1=27504 + rng.randint(-80, 80), P1=36477 + rng.randint(-150, 150))
    truth = {
        "temperature": rng.uniform(-20, 45),
        "pressure": rng.uniform(850, 1080),
        "humidity": rng.uniform(5, 95),
    }
    adc_t, adc_p, adc_h = bme.raw_for(truth, cal)
    t_fine, temperature = bme.compensate_temperature(adc_t, cal)
    assert temperature / 100 == pytest.approx(truth["temperature"], abs=0.01)
    assert bme.compensate_pressure(adc_p, t_fine, cal) / 25600 == pytest.approx(truth["pressure"], abs=0.02)
    assert bme.compensate_humidity(adc_h, t_fine, cal) / 1024 == pytest.approx(truth["humidity"], abs=0.01)


def test_bme280_registers_forced_mode_and_reset() -> None:
    clock = FakeClock()
    chip = bme.BME280(clock, Environment(seed=1).at)
    chip.i2c_write(bytes([0xD0]))
    assert chip.i2c_read(1) == b"\x60"
    chip.i2c_write(bytes([0xFA]))
    assert chip.i2c_read(3) == b"\x80\x00\x00"  # no measurement yet: the "skipped" value
    chip.i2c_write(bytes([0xF2, 0x01]))
    chip.i2c_write(bytes([0xF4, 0b00100101]))  # x1 temperature/pressure, forced mode
    chip.i2c_write(bytes([0xF3]))
    assert chip.i2c_read(1)[0] & 0x08, "status must say measuring right after the trigger"
    clock.t += 0.02
    chip.i2c_write(bytes([0xF3]))
    assert chip.i2c_read(1)[0] & 0x08 == 0
    chip.i2c_write(bytes([0xF4]))
    assert chip.i2c_read(1)[0] & 0x03 == 0, "forced mode returns to sleep after the conversion"
    chip.i2c_write(bytes([0xFA]))
    assert chip.i2c_read(3) != b"\x80\x00\x00"
    chip.i2c_write(bytes([0xE0, 0xB6]))  # soft reset restores power-on values
    chip.i2c_write(bytes([0xFA]))
    assert chip.i2c_read(3) == b"\x80\x00\x00"


def test_scd30_crc_and_protocol() -> None:
    assert crc8(b"\xbe\xef") == 0x92  # the SCD30 interface description's example
    clock = FakeClock()
    sensor = SCD30(clock, lambda t: {"co2": 812.5, "temperature": 22.25, "humidity": 41.0})
    sensor.i2c_write(bytes([0xD1, 0x00]))
    assert sensor.i2c_read(3) == words(0x0342)
    with pytest.raises(OSError):
        sensor.i2c_write(bytes([0x00, 0x10, 0x00, 0x00, 0x00]))  # wrong CRC on the argument: NACK
    sensor.i2c_write(bytes([0x00, 0x10, 0x00, 0x00, crc8(b"\x00\x00")]))
    sensor.i2c_write(bytes([0x02, 0x02]))
    assert sensor.i2c_read(3) == words(0), "no data before the first interval"
    clock.t += 2.1
    sensor.i2c_write(bytes([0x02, 0x02]))
    assert sensor.i2c_read(3) == words(1)
    sensor.i2c_write(bytes([0x03, 0x00]))
    assert sensor.i2c_read(18) == float_words(812.5) + float_words(22.25) + float_words(41.0)
    sensor.i2c_write(bytes([0x02, 0x02]))
    assert sensor.i2c_read(3) == words(0), "reading the measurement clears data-ready"


def test_sds011_frames_query_mode_sleep_and_corruption() -> None:
    frame = data_frame(12.3, 45.6)
    assert frame[0] == 0xAA and frame[1] == 0xC0 and frame[-1] == 0xAB
    assert frame[8] == checksum(frame[2:8]) == (sum(frame[2:8]) & 0xFF)
    assert int.from_bytes(frame[2:4], "little") == 123 and int.from_bytes(frame[4:6], "little") == 456
    clock = FakeClock()
    sensor = SDS011(clock, lambda t: {"pm25": 3.1, "pm10": 5.2})
    clock.t = 3.5
    assert sensor.uart_poll().count(b"\xaa\xc0") == 3, "active mode: one frame per second"
    reply = sensor.uart_receive(command_frame(2, 1, 1))  # set query mode
    assert reply[:3] == b"\xaa\xc5\x02" and reply[4] == 1
    clock.t = 10
    assert sensor.uart_poll() == b"", "query mode sends nothing unasked"
    assert sensor.uart_receive(command_frame(4)) == data_frame(3.1, 5.2)
    assert sensor.uart_receive(command_frame(6, 1, 0))[4] == 0  # sleep
    assert sensor.uart_receive(command_frame(4)) == b"", "a sleeping sensor ignores queries"
    sensor.uart_receive(command_frame(6, 1, 1))
    bad = bytearray(command_frame(4))
    bad[17] ^= 0xFF
    assert sensor.uart_receive(bytes(bad)) == b"", "a command with a wrong checksum is ignored"
    noisy = SDS011(clock, lambda t: {"pm25": 3.1, "pm10": 5.2}, seed=3, corruption=1.0)
    noisy.uart_receive(command_frame(2, 1, 1))
    corrupted = noisy.uart_receive(command_frame(4))
    assert corrupted != data_frame(3.1, 5.2) and corrupted[8] != checksum(corrupted[2:8])


READ_SENSORS = """
import json, machine, time
import bme280, scd30, sds011
i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21), freq=100000)
uart = machine.UART(2, baudrate=9600, tx=17, rx=16, timeout=100)
b = bme280.BME280(i2c, 0x76)
c = scd30.SCD30(i2c)
s = sds011.SDS011(uart)
out = {"bme280": b.read(), "sds011": s.read()}
for _ in range(400):
    r = c.read()
    if r:
        out["scd30"] = r
        break
    time.sleep_ms(10)
print("READINGS " + json.dumps(out))
"""


async def test_device_drivers_read_plausible_values_from_the_emulators(devices) -> None:
    device = devices("dev-01", sds011_noise=0.5)
    device.install({n: device_file(n) for n in ("bme280.py", "scd30.py", "sds011.py")})
    device.install({"main.py": READ_SENSORS})
    device.start()
    line = await device.wait_console("READINGS", timeout=60)
    readings = json.loads(line.split("READINGS ", 1)[1])
    temperature, humidity, pressure = readings["bme280"]
    truth = device.bme280.last_truth
    assert temperature == pytest.approx(truth["temperature"], abs=0.02)
    assert humidity == pytest.approx(truth["humidity"], abs=0.02)
    assert pressure == pytest.approx(truth["pressure"], abs=0.02)
    assert -40 < temperature < 85 and 0 <= humidity <= 100 and 300 < pressure < 1100
    pm25, pm10 = readings["sds011"]
    assert pm25 == pytest.approx(device.sds011.last_truth["pm25"], abs=0.051)
    assert pm10 == pytest.approx(device.sds011.last_truth["pm10"], abs=0.051)
    co2, co2_temperature, co2_humidity = readings["scd30"]
    assert co2 == pytest.approx(device.scd30.last_truth["co2"], rel=1e-6)
    assert co2_temperature == pytest.approx(device.scd30.last_truth["temperature"], abs=1e-4)
    assert co2_humidity == pytest.approx(device.scd30.last_truth["humidity"], abs=1e-4)
    assert 400 <= co2 <= 40000
    assert device.sds011.query_mode, "the driver put the SDS011 into query mode"
