"""The operator in a cluster: kopf handlers (glue), the work queue, and the controller that turns the
pure reconcilers' results into API writes. Importing `weatherfleet.controller.handlers` registers the
handlers with kopf."""
