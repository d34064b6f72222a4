# Runs after boot.py. Starts the application from the selected slot. If it raises, restart slowly (the
# boot counter in boot.py rolls back an unconfirmed release); never spin in a tight crash loop.
import sys
import time


def _run():
    try:
        import app

        app.main()
    except KeyboardInterrupt:
        raise
    except Exception as e:
        print("weatherfleet: application failed:", repr(e))
        if hasattr(sys, "print_exception"):
            sys.print_exception(e)
        try:
            import slots

            pending = slots.load().get("pending")
        except Exception:
            pending = None
        # an unconfirmed release gets its next boot at once; a confirmed one waits before retrying
        time.sleep(1 if pending else 30)
        import machine

        machine.reset()


_run()
