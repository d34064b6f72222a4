# The application: one cooperative asyncio loop with measurement, publish, MQTT upkeep, OTA and the
# watchdog. main.py calls main(); everything hardware-specific is reached through config and injectable
# factories so tests and the CPython emulation can drive it.
from micropython import const
import asyncio
import gc
import json
import random
import time

import config
import mqtt
import net
import payload
import report
import ring
import slots
import twin

_SLOT_SIZE = const(384)
# MicroPython ports before 1.22 count time.time() from 2000-01-01; payloads use the Unix epoch
EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0


def log(*args):
    print("weatherfleet:", *args)


def epoch():
    return int(time.time()) + EPOCH_OFFSET


def epoch_ms():
    # time_ns where the port has it (ESP32 does): second-resolution stamps would let two measurements in one
    # second overwrite each other in InfluxDB
    tn = getattr(time, "time_ns", None)
    if tn is not None:
        return tn() // 1000000 + EPOCH_OFFSET * 1000
    return epoch() * 1000


def _reset():
    import machine

    machine.reset()


class App:
    def __init__(self, cfg, state, slot_dir="", root="", open_connection=None, stream_factory=None, make_i2c=None, make_uart=None, reset=None, wdt=None):
        self.cfg = cfg
        self.state = state
        self.slot_dir = slot_dir
        self.root = root
        self.device = cfg["device"]
        self.features = cfg["features"]
        # the pending release if boot.py started it, else the confirmed one; a freshly provisioned board
        # knows its version from config (firmwareVersion) until its first OTA
        self.version = (state.get("pending") or {}).get("version") or state.get("version") or cfg.get("firmwareVersion") or "0.0.0"
        self._outbox = []
        self.reset = reset or _reset
        self.wdt = wdt
        prefix = cfg["topicPrefix"]
        self.t_measure = ("%s/%s/measurements" % (prefix, self.device)).encode()
        self.t_status = ("%s/%s/status" % (prefix, self.device)).encode()
        self.t_ota = ("%s/%s/ota" % (prefix, self.device)).encode()
        self.t_notify = "%s/%s/#" % (cfg["otaTopic"], self.device)
        # the operator's side of the device twin: twin/<id>/desired (retained), later twin/<id>/cert
        self.t_twin = "twin/%s/#" % self.device
        self.t_desired = "twin/%s/desired" % self.device
        self.t_cert = "twin/%s/cert" % self.device
        self.t_csr = ("twin/%s/csr" % self.device).encode()
        self.cert_staged = None  # a renewed certificate, used for the next connection only
        self.cert_state = None  # why the last renewed certificate was not taken
        self._csr_sent = -(1 << 30)
        self.cert_wake = asyncio.Event()  # a new configuration may bring another renewBefore
        self._cert_due_checked = 0
        self.encoder = payload.Encoder(cfg["device"], cfg["location"], self.version, "json" in self.features)
        self.ring = ring.Ring(cfg["bufferSize"], max(_SLOT_SIZE, self.encoder.max_size()))
        self.values = [None] * len(payload.FIELDS)
        self.last_values = [None] * len(payload.FIELDS)  # of the last encoded measurement (heartbeat)
        self.last_reading_ms = 0
        self._make_i2c = make_i2c
        self._make_uart = make_uart
        import sensors

        self.sensors = sensors.Sensors(cfg["sensors"], cfg["measurementIntervalSeconds"], make_i2c, make_uart)
        # the desired configuration in force: its generation (0: config.json as provisioned), and why the
        # last document was refused, if it was
        self.config_state = {"generation": cfg.get("generation", 0)}
        self._desired_text = None
        self.measure_wake = asyncio.Event()
        self.heartbeat_wake = asyncio.Event()
        self._fallback_login = None  # (username, password) before a rotation, until the new one worked
        self.wifi = net.Wifi(cfg.get("wifi"))
        self.started = time.ticks_ms()
        self.alive = self.started
        self.healthy = False
        self.draining = False
        self._reset_cause = None
        self.last_stamp = 0
        self.ota_wake = asyncio.Event()
        self.notified = None  # the version an OtaFlux notification named, until a check offers it
        self.notified_tries = 0
        self.updating = False
        broker = cfg["broker"]
        self.ssl = net.ssl_context(cfg["tls"], root) if broker["tls"] else None
        will = (self.t_status, report.status(False), True, 1)
        self.client = mqtt.MQTTClient(
            self.device,
            broker["host"],
            broker["port"],
            ssl=self.ssl,
            keepalive=broker["keepalive"],
            username=broker.get("username"),
            password=broker.get("password"),
            will=will,
            version=broker["version"],
            open_connection=open_connection,
            on_message=self.on_message,
        )
        self._stream_factory = stream_factory
        self.updater = None

    # ---- helpers -----------------------------------------------------------------------------------

    def feed(self):
        if self.wdt is not None:
            self.wdt.feed()

    def status_json(self, online=True):
        heap = getattr(gc, "mem_free", lambda: None)()
        return report.status(
            online,
            firmware=self.version,
            uptime=time.ticks_diff(time.ticks_ms(), self.started) // 1000,
            heap=heap,
            rssi=self.wifi.rssi(),
            boot=self.boot_reason(),
            slot=self.slot_label(),
            sensors=self.sensors.status if self.sensors else {},
            dropped=self.ring.dropped,
            config=self.config_state,
            reading=self.last_reading(),
            cert=self.cert_state,
        )

    def last_reading(self):
        """The last measurement as the operator shows it (lastReading), or None before the first."""
        if not self.last_reading_ms:
            return None
        d = {"time": self.last_reading_ms}
        for i in range(len(payload.FIELDS)):
            v = self.last_values[i]
            if payload._finite(v):
                d[payload.FIELDS[i]] = round(v, 2)
        return d

    def boot_reason(self):
        """OTA's view (ota / rollback) when it has one, else the hardware's reset cause."""
        b = self.state.get("boot", "normal")
        if b != "normal":
            return b
        if self._reset_cause is None:
            self._reset_cause = "normal"
            try:
                import machine

                cause = machine.reset_cause()
                for name, label in (
                    ("PWRON_RESET", "power_on"),
                    ("HARD_RESET", "hard"),
                    ("WDT_RESET", "watchdog"),
                    ("DEEPSLEEP_RESET", "deepsleep"),
                    ("SOFT_RESET", "soft"),
                ):
                    if getattr(machine, name, None) == cause:
                        self._reset_cause = label
                        break
            except Exception:  # no machine module (tests) or no reset_cause on this port
                pass
        return self._reset_cause

    def slot_label(self):
        pending = self.state.get("pending") or {}
        return pending.get("slot") or pending.get("image") or self.state.get("active") or "root"

    async def publish(self, topic, data, retain=False, qos=1):
        """Publish and (QoS 1) wait for the PUBACK. True on success. No lock is needed: encoding and
        handing the packet to the socket happen without an await in between, and every waiter
        watches for its own packet id."""
        if isinstance(data, str):
            data = data.encode()
        c = self.client
        if not c.connected:
            return False
        try:
            pid = await c.publish(topic, data, -1, qos, retain)
            if qos and not c.is_acked(pid):
                await c.wait_puback(pid)
            return True
        except (OSError, mqtt.MQTTError) as e:
            log("publish failed:", e)
            c.close()
            return False

    async def ota_event(self, name, version=None, percent=None, reason=None):
        await self.publish(self.t_ota, report.event(name, version, percent, reason, time_ms=epoch_ms()))

    async def flush_state_events(self):
        events = self.state.get("events") or []
        while events:
            e = events[0]
            if not await self.publish(self.t_ota, report.event(e["event"], e.get("version"), None, e.get("reason"), time_ms=epoch_ms())):
                return
            events.pop(0)
            slots.save(self.state, self.root)

    def on_message(self, topic, data, retained):
        if topic == self.t_desired:
            self.apply_desired(bytes(data).decode())
            return
        if topic == self.t_cert:
            self.on_cert(bytes(data).decode())
            return
        if topic.startswith("twin/"):
            return
        # OtaFlux notification {"version", "size"}: check now, unless it is what we run or rolled back
        try:
            version = json.loads(data).get("version")
        except (ValueError, AttributeError):
            return
        if version and version != self.version and version not in self.state["bad"]:
            self.notified, self.notified_tries = version, 0
            self.ota_wake.set()

    # ---- desired configuration (device twin) ---------------------------------------------------------

    def apply_desired(self, text):
        """Validate, apply and persist a desired configuration; True when it was applied. A refused one
        leaves everything as it was and is reported in the next status (sent at once)."""
        if text == self._desired_text:
            return False  # the retained document again, after a reconnect
        if not text:
            return False  # the operator cleared the topic (decommissioning): keep what we have
        gen = None
        try:
            doc = json.loads(text)
            gen = doc.get("generation") if isinstance(doc, dict) else None
            new = twin.merge(self.cfg, doc, twin.driver_present)
            self._apply(new)
        except ValueError:  # not JSON (config.ConfigError is no ValueError)
            return self._refuse(gen, "desired configuration is not valid JSON")
        except config.ConfigError as e:
            return self._refuse(gen, str(e))
        except Exception as e:  # whatever else: never let one document take the board down
            return self._refuse(gen, "could not apply: %s" % (str(e) or type(e).__name__))
        try:
            twin.save(text, self.root)
        except OSError as e:
            log("desired configuration applied but not saved:", e)
        self._desired_text = text
        self.config_state = {"generation": gen}
        log("desired configuration generation", gen, "applied")
        self.heartbeat_wake.set()
        return True

    def _refuse(self, gen, reason):
        log("desired configuration refused:", reason)
        state = {"generation": self.config_state.get("generation", 0), "error": reason}
        if isinstance(gen, int):
            state["rejected"] = gen
        self.config_state = state
        self.heartbeat_wake.set()
        return False

    def _apply(self, new):
        """Switch to configuration new without a reset: everything is built first, then swapped in, so a
        failure half-way leaves the old configuration whole."""
        import sensors

        old = self.cfg
        interval = new["measurementIntervalSeconds"]
        sens = self.sensors
        if new["sensors"] != old["sensors"]:
            sens = sensors.Sensors(new["sensors"], interval, self._make_i2c, self._make_uart)
        encoder = self.encoder
        want_json = "json" in new["features"]
        if want_json != encoder.json:
            encoder = payload.Encoder(self.device, new["location"], self.version, want_json)
            if encoder.max_size() > self.ring.slot_size:
                raise config.ConfigError("payload %s does not fit this board's buffer" % ("json" if want_json else "influx"))
        b, ob = new["broker"], old["broker"]
        login = (b.get("username"), b.get("password"))
        if login != (ob.get("username"), ob.get("password")):
            # rotation: the next connection uses the new login, the last one that worked stays as a
            # fallback until the new one has worked once (the broker may not have switched yet)
            if self._fallback_login is None:
                self._fallback_login = (ob.get("username"), ob.get("password"))
            self.client.username, self.client.password = login
        self.cfg = new
        self.features = new["features"]
        sens.interval_s = interval
        self.sensors = sens
        self.encoder = encoder
        self.measure_wake.set()  # the next measurement on the new interval, not after the old one
        self.cert_wake.set()

    # ---- health ------------------------------------------------------------------------------------

    async def health_passed(self):
        """First successful publish after boot: confirm a pending release."""
        if self.healthy:
            return
        self.healthy = True
        pending = self.state.get("pending")
        if not pending:
            return
        if pending.get("image"):
            import esp32

            esp32.Partition.mark_app_valid_cancel_rollback()
        slots.confirm(self.state, self.root)
        log("release", self.version, "confirmed")
        await self.flush_state_events()
        await self.publish(self.t_status, self.status_json(), retain=True)

    # ---- tasks -------------------------------------------------------------------------------------

    async def mqtt_task(self):
        attempt = 0
        while True:
            self.feed()
            if not self.wifi.connect(self.feed):
                await asyncio.sleep(mqtt.backoff_ms(attempt) / 1000)
                attempt += 1
                continue
            reader = None
            try:
                await self.connect()
                await self.client.subscribe(self.t_notify, 1)
                await self.client.subscribe(self.t_twin, 1)
                attempt = 0
                log("connected to", self.cfg["broker"]["host"], "MQTT", "5" if self.client.version == 5 else "3.1.1")
                reader = asyncio.create_task(self.client.run_reader())
                await self.publish(self.t_status, self.status_json(), retain=True)
                await self.flush_state_events()
                await self.drain()
                while self.client.connected:
                    await asyncio.sleep(1)
                    if self.client.is_stale():
                        log("broker silent: reconnecting")
                        break
                    if self.client.keepalive_due():
                        await self.client.ping()
                self.client.close()
            except (OSError, EOFError, mqtt.MQTTError, asyncio.TimeoutError, MemoryError) as e:
                log("mqtt:", e)
                self.client.close()
            if reader is not None:
                try:
                    reader.cancel()
                except Exception:
                    pass
                # let go of it: a finished coroutine keeps its last frames, and with them the closed
                # connection's stream, socket and TLS context, which a renewed certificate's context must
                # replace in place (_swap_ssl)
                reader = None
            delay = mqtt.backoff_ms(attempt) / 1000
            attempt += 1
            await asyncio.sleep(delay)

    async def connect(self):
        """Connect, with what a rotation left to try: a staged certificate (kept only if this connection
        succeeds, else dropped and the current one used at once) and a previous NanoMQ login (when the
        new one is refused, once)."""
        if self.ssl is None and self.cfg["broker"]["tls"]:
            self._swap_ssl(self.cfg["tls"])  # lost to a MemoryError while switching certificates
        staged = self.cert_staged
        if staged:
            import creds

            tls = self.cfg["tls"]
            try:
                self._swap_ssl({"ca": tls["ca"], "cert": staged, "key": tls["key"]})
                await self.client.connect()
            except Exception as e:  # refused, a handshake the broker broke off, or no memory for the context
                self.client.close()
                self.cert_staged = None
                creds.discard(tls, self.root)
                self.cert_state = {"error": "new certificate not accepted: %s" % (str(e) or type(e).__name__)}
                log("new certificate not accepted, keeping the current one:", e)
                self._swap_ssl(tls)  # a MemoryError here: the MQTT task retries, and connect rebuilds it first
            else:
                creds.commit(tls, self.root)
                self.cert_staged = None
                self.cert_state = None
                self._cert_due_checked = 0
                log("switched to the renewed certificate")
                return
        if self._fallback_login is None:
            await self.client.connect()
            return
        # a rotation in progress: the new login first, every time, until the broker has it
        b = self.cfg["broker"]
        self.client.username, self.client.password = b.get("username"), b.get("password")
        try:
            await self.client.connect()
        except mqtt.Refused as e:
            log("new login refused (%s): using the previous one for now" % e)
            self.client.close()
            self.client.username, self.client.password = self._fallback_login
            await self.client.connect()
            return
        self._fallback_login = None

    def _swap_ssl(self, files):
        """Replace the TLS context with one for `files`. One context at a time: a context is 3 KiB in one
        piece (mbedTLS's state inside the MicroPython object), which a heap that has run a while and holds
        the updater has nowhere else (measured on the VM at the default cap: 51 KB free, no hole above
        1.8 KB), so the old one is set free first and the new one made in its hole. The closed connection's
        socket holds the old context: mqtt.close closes and drops it, mqtt_task drops the reader task,
        net.forget_closed_sockets asyncio's poller, and OTA looks the context up per request."""
        self.ssl = self.client.ssl = None
        net.forget_closed_sockets()
        gc.collect()
        self.ssl = self.client.ssl = net.ssl_context(files, self.root)

    def on_cert(self, text):
        """A certificate from the operator (twin/<id>/cert): staged for the next connection, which starts
        now. Ignored when it is the one in use; refused (and reported) when it is not for this key."""
        if not text or "tls" not in self.cfg:
            return False
        import creds

        try:
            staged = creds.stage(self.cfg["tls"], text, self.root)
        except Exception as e:
            self.cert_state = {"error": "certificate refused: %s" % (str(e) or type(e).__name__)}
            self.heartbeat_wake.set()
            return False
        if staged is None:
            return False
        self.cert_staged = staged
        log("renewed certificate received: reconnecting with it")
        self.client.close()  # the MQTT task reconnects with it (buffered readings wait in the ring)
        return True

    def renewal_due(self, now):
        """Whether to ask for a new certificate: within renewBeforeSeconds (desired configuration, else a
        third of the lifetime) of the current one's expiry, and no request in the last retry period."""
        if "mtls" not in self.features and "tls" not in self.cfg:
            return False
        if self.cert_staged or now - self._csr_sent < self._cert_timing()[1]:
            return False
        import creds

        try:
            with open(self.root + self.cfg["tls"]["cert"], "rb") as f:
                pem = f.read()  # PEM or DER, as provisioning wrote it
            return creds.due(pem, now, self.cfg.get("certificates", {}).get("renewBeforeSeconds"))
        except (OSError, ValueError, IndexError) as e:
            log("certificate unreadable:", repr(e))
            return False

    def _cert_timing(self):
        """(check period, retry period) of the renewal: set in the desired configuration, else scaled to
        renewBefore (a minute and five minutes for the usual days-long windows; seconds when a test
        compresses time with short certificate durations)."""
        c = self.cfg.get("certificates") or {}
        before = c.get("renewBeforeSeconds") or 3600
        return (
            c.get("checkSeconds") or min(60, max(1, before // 10)),
            c.get("retrySeconds") or min(300, max(2, before // 4)),
        )

    async def cert_task(self):
        """Renewal: a CSR over the authenticated connection when the certificate is due."""
        while True:
            try:
                await asyncio.wait_for(self.cert_wake.wait(), self._cert_timing()[0])
            except asyncio.TimeoutError:
                pass
            self.cert_wake.clear()
            now = epoch()
            if self.client.connected and self.renewal_due(now):
                import creds

                try:
                    message = creds.request(self.cfg["tls"], self.device, self.root)
                except Exception as e:
                    log("csr failed:", e)
                    continue
                if await self.publish(self.t_csr, message):
                    self._csr_sent = now
                    log("certificate due for renewal: CSR sent")

    async def drain(self):
        """Publish buffered measurements oldest first; each leaves the ring only once acknowledged.
        Both the MQTT task (after a reconnect) and the measurement task call this: one drain at a time,
        or two could send the same oldest entry and pop it twice."""
        if self.draining:
            return  # the running drain loops until the ring is empty, new entries included
        self.draining = True
        r = self.ring
        c = self.client
        try:
            while r.count and c.connected:
                i = r.head
                # App.publish() inlined: this is the hot path, one coroutine frame less per measurement
                try:
                    pid = await c.publish(self.t_measure, r.views[i][: r.lengths[i]], -1, 1, False)
                    if not c.is_acked(pid):
                        await c.wait_puback(pid)
                except (OSError, mqtt.MQTTError) as e:
                    log("publish failed:", e)
                    c.close()
                    return
                r.pop()
                if not self.healthy:
                    await self.health_passed()
        finally:
            self.draining = False

    async def measure_once(self):
        """Read every sensor, buffer the encoded measurement, publish what the broker can take."""
        await self.sensors.read(self.values)
        ms = epoch_ms()
        if ms <= self.last_stamp:
            ms = self.last_stamp + 1  # unique and increasing per device, even if the clock steps back
        self.last_stamp = ms
        n = self.encoder.encode(self.values, ms, self.ring.slot_for_write())
        self.ring.commit(n)
        for i in self.encoder.flagged:  # NaN, inf, 3.4e38: left out of the payload, said in status instead
            self.sensors.status[payload.SENSOR_OF[i]] = "unusable %s value, not published" % payload.FIELDS[i]
        if n:
            lv = self.last_values
            for i in range(len(lv)):
                lv[i] = self.values[i]
            self.last_reading_ms = ms
        await self.drain()

    async def measure_task(self):
        while True:
            start = time.ticks_ms()
            self.alive = start
            try:
                await self.measure_once()
                self.sensors.status.pop("measurement", None)
            except Exception as e:  # a driver or encoder bug must not end measuring: say it in status
                if self.sensors is not None:
                    self.sensors.status["measurement"] = "failed: %s: %s" % (type(e).__name__, e)
            self.alive = time.ticks_ms()
            gc.collect()
            # read each time: a desired configuration may change it (and wakes this wait)
            left = self.cfg["measurementIntervalSeconds"] * 1000 - time.ticks_diff(time.ticks_ms(), start)
            if left > 0:
                try:
                    await asyncio.wait_for(self.measure_wake.wait(), left / 1000)
                except asyncio.TimeoutError:
                    pass
            self.measure_wake.clear()

    async def heartbeat_task(self):
        """The retained status again every heartbeatSeconds (and at once when the configuration state
        changed): how the operator knows the board is alive without reading measurements."""
        while True:
            try:
                await asyncio.wait_for(self.heartbeat_wake.wait(), self.cfg["heartbeatSeconds"])
            except asyncio.TimeoutError:
                pass
            self.heartbeat_wake.clear()
            if self.client.connected:
                await self.publish(self.t_status, self.status_json(), retain=True)

    async def watchdog_task(self):
        # feed only while the measurement loop makes progress: a hang in it ends in a reset
        health_limit = (self.cfg.get("ota") or {}).get("healthTimeoutSeconds", 300) * 1000
        while True:
            limit = (self.cfg["measurementIntervalSeconds"] * 3 + 60) * 1000
            now = time.ticks_ms()
            if time.ticks_diff(now, self.alive) < limit or self.updating:
                self.feed()
            if self.state.get("pending") and not self.healthy and time.ticks_diff(now, self.started) > health_limit:
                log("new release not healthy after", health_limit // 1000, "s: restarting to roll back")
                self.reset()
                return
            await asyncio.sleep(2)

    def make_updater(self):
        import ota

        o = self.cfg["ota"]
        if self._stream_factory is None:
            tls = o.get("tls")

            # the context in force at each request, not the one at boot: a renewed certificate replaces it
            def factory(host, port):
                return net.open_stream(host, port, self.ssl if tls else None)

            self._stream_factory = factory
        keys = [ota.decode_key(k) for k in self.cfg["signingKeys"]]
        # the operator's keys: only they authorise a downgrade (a halted candidate going back, a rollback)
        rollout_keys = []
        for k in self.cfg.get("rolloutKeys") or ():
            try:
                rollout_keys.append(ota.decode_key(k))
            except ValueError:
                log("rolloutKeys: not an Ed25519 public key, ignored")
        return ota.Updater(
            self.device, o["host"], o["port"], self._stream_factory, keys, self.state, self.version,
            kind=o["kind"], root=self.root, report=self._ota_report, rollout_keys=rollout_keys,
        )

    def _ota_report(self, event, version=None, percent=None, reason=None):
        self._outbox.append((event, version, percent, reason))

    async def _flush_outbox(self):
        while self._outbox:
            e = self._outbox.pop(0)
            await self.ota_event(e[0], e[1], e[2], e[3])

    async def ota_task(self):
        try:
            # at boot, not at the first check: the updater's buffers and the signature verifier come from a
            # heap not yet fragmented by a running board, and the check allocates only what it reads
            self.updater = self.make_updater()
        except MemoryError:
            log("no memory for the updater at boot: trying again at the check")  # measuring goes on
        o = self.cfg["ota"]
        # first check soon after boot, spread over the jitter window so a fleet does not stampede
        delay = 5 + random.getrandbits(16) % (o["jitterSeconds"] + 1)
        while True:
            try:
                await asyncio.wait_for(self.ota_wake.wait(), delay)
            except asyncio.TimeoutError:
                pass
            self.ota_wake.clear()
            o = self.cfg["ota"]  # the desired configuration may have changed the check interval
            delay = o["checkIntervalSeconds"] + random.getrandbits(16) % (o["jitterSeconds"] + 1)
            if self.state.get("pending"):
                continue  # never stack an update on an unconfirmed one
            plan = None
            try:
                if self.updater is None:
                    self.updater = self.make_updater()
                plan = self.updater.check()
                await self._flush_outbox()
                if plan is None:
                    if self.notified and self.notified_tries < 4:
                        # told of a release the server did not offer yet: the OtaFlux worker or replica
                        # that answered may not have the new plan (a ConfigMap reaches pods at different
                        # times), so ask again soon (10, 20, 40, 80 s), not at the next hourly check
                        self.notified_tries += 1
                        delay = min(delay, 5 << self.notified_tries)
                    else:
                        self.notified = None
                    continue
                self.notified = None
                log("updating", self.version, "->", plan.version)
                self.updating = True
                await self.ota_event("downloading", plan.version, 0)
                next_report = 10
                for pct in self.updater.install(plan):
                    self.feed()
                    if pct >= next_report:
                        await self.ota_event("downloading", plan.version, pct)
                        next_report = pct - pct % 10 + 10
                    await asyncio.sleep(0)
                await self._flush_outbox()
            except Exception as e:  # OtaError, or a filesystem/network error: report, keep running
                self.updating = False
                log("ota failed:", e)
                await self._flush_outbox()
                await self.ota_event("failed", plan.version if plan else None, None, str(e))
                continue
            finally:
                self.updating = False
            log("installed", plan.version, "- restarting")
            await self.publish(self.t_status, report.status(False), retain=True)
            await self.client.disconnect()
            self.reset()
            return

    async def run(self):
        log("device", self.device, "firmware", self.version, "slot", self.slot_label(), "boot", self.state.get("boot"))
        tasks = [self.mqtt_task(), self.measure_task(), self.watchdog_task(), self.heartbeat_task()]
        if self.ssl is not None and "mtls" in self.features:
            tasks.append(self.cert_task())
        if "ota" in self.features:
            tasks.append(self.ota_task())
        await asyncio.gather(*tasks)


def idle(reason, wdt=None, retry_s=60, sleep=time.sleep):
    """Safe idle after a configuration problem: one log line, keep the watchdog fed, retry periodically.
    Returns when config.json becomes loadable."""
    log("config:", reason, "- idling; fix config.json (retrying every %d s)" % retry_s)
    while True:
        waited = 0
        while waited < retry_s:
            if wdt is not None:
                wdt.feed()
            sleep(1)
            waited += 1
        try:
            return config.load()
        except config.ConfigError:
            pass


def main(state=None, slot_dir="", config_path="config.json", **kwargs):
    wdt = kwargs.pop("wdt", None)
    try:
        cfg = config.load(config_path)
    except config.ConfigError as e:
        cfg = idle(str(e), wdt)
    if wdt is None and cfg["watchdogSeconds"]:
        try:
            from machine import WDT

            wdt = WDT(timeout=cfg["watchdogSeconds"] * 1000)
        except (ImportError, AttributeError, ValueError):
            wdt = None
    cfg = twin.overlay(cfg, kwargs.get("root", ""), twin.driver_present, log)
    if state is None:
        state = slots.load()
    pending = state.get("pending")
    if pending and pending.get("image"):
        try:
            import esp32

            label = esp32.Partition(esp32.Partition.RUNNING).info()[4]
        except ImportError:
            label = None
        if label is not None and slots.image_rolled_back(state, label):
            log("bootloader rolled back", pending.get("version"))
    pending = state.get("pending")
    if pending and not any(e.get("event") == "booted" and e.get("version") == pending.get("version") for e in state["events"]):
        slots.add_event(state, "booted", pending.get("version"))
        slots.save(state)
    app = App(cfg, state, slot_dir, wdt=wdt, **kwargs)
    app._desired_text = twin.text(kwargs.get("root", "")) if "generation" in cfg else None
    asyncio.run(app.run())
