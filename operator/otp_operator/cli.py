"""``otp-operator run``: start the operator (kopf) with this project's handlers and settings."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
from collections.abc import Sequence

from . import egress, endpoints, memory_report, names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otp-operator", description="Kubernetes operator for OtpChannels.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (default)")
    run.add_argument("--peering", metavar="NAME",
                     help="HA peering object name (needs kopf's peering CRDs); default: standalone")
    run.add_argument("--priority", type=int, default=None,
                     help="peering priority of this instance (the highest live one works, the others stand "
                          "by; equal priorities freeze all of them); default with --peering: a random one")
    run.add_argument("--peering-lifetime", type=float, default=15.0, metavar="SECONDS",
                     help="how long a silent peer counts as alive, so the longest a standby waits after the "
                          "active operator died without a clean exit")
    run.add_argument("--liveness", metavar="URL", help="liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    run.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
    run.add_argument("--drift-interval", type=float, default=names.DEFAULT_DRIFT_INTERVAL_SECONDS,
                     metavar="SECONDS", help="how often Auth0 is checked for drift (reads only)")
    run.add_argument("--rotation-grace", type=float, default=names.DEFAULT_ROTATION_GRACE_SECONDS, metavar="SECONDS",
                     help="how long the old signing key stays accepted after Auth0 has the new one")
    run.add_argument("--key-propagation", type=float, default=names.DEFAULT_KEY_PROPAGATION_SECONDS,
                     metavar="SECONDS",
                     help="how long after the relay rolled out with a new signing key before Auth0 gets it "
                          "(the kubelet refreshes a running pod's mounted Secret at its next sync of the pod: "
                          "up to 90 s with the kubelet's defaults)")
    run.add_argument("--secret-grace", type=float, default=300.0, metavar="SECONDS",
                     help="how long a missing referenced Secret counts as on its way (Reconciling) before "
                          "the channel is Stalled (GitOps tools may create it seconds after the channel)")
    run.add_argument("--relay-image", default=os.environ.get(names.RELAY_IMAGE_ENV) or names.default_relay_image(),
                     help=f"relay container image (env {names.RELAY_IMAGE_ENV})")
    run.add_argument("--auth0-concurrency", type=int, default=4, help="concurrent Auth0 syncs per tenant")
    run.add_argument("--max-concurrent-reconciles", type=int, default=64,
                     help="channels reconciled at the same time (bounds API bursts and memory)")
    run.add_argument(endpoints.ALLOW_AUTH0_DOMAIN_FLAG, action="append", metavar="GLOB",
                     default=endpoints.split_patterns(os.environ.get(endpoints.ALLOW_AUTH0_DOMAIN_ENV)),
                     help="also accept spec.auth0.domain values matching this glob besides Auth0 tenant "
                          f"domains, e.g. 'auth.shop.example' (repeatable; env {endpoints.ALLOW_AUTH0_DOMAIN_ENV}, "
                          "comma-separated)")
    run.add_argument(endpoints.ALLOW_SMS_BASE_URL_FLAG, action="append", metavar="GLOB",
                     default=endpoints.split_patterns(os.environ.get(endpoints.ALLOW_SMS_BASE_URL_ENV)),
                     help="also accept spec.sms.baseUrl values whose scheme://host[:port] matches this glob "
                          "besides 8x8's https hosts, e.g. 'https://sms-proxy.internal:8443' (repeatable; "
                          f"env {endpoints.ALLOW_SMS_BASE_URL_ENV}, comma-separated)")
    run.add_argument(endpoints.ALLOW_STATE_STORE_FLAG, action="append", metavar="GLOB",
                     default=endpoints.split_patterns(os.environ.get(endpoints.ALLOW_STATE_STORE_ENV)),
                     help="accept spec.relay.stateStore.url values whose host:port (port written out, 6379 by "
                          "default) matches this glob, e.g. 'redis.cache.svc.cluster.local:6379'; none is "
                          f"accepted without it (repeatable; env {endpoints.ALLOW_STATE_STORE_ENV}, comma-separated)")
    run.add_argument(endpoints.ALLOW_RELAY_IMAGE_FLAG, action="append", metavar="GLOB",
                     default=endpoints.split_patterns(os.environ.get(endpoints.ALLOW_RELAY_IMAGE_ENV)),
                     help="also accept spec.relay.podTemplate.spec.container.image from repositories matching "
                          "this glob (the repository without tag or digest; * also matches /), besides the "
                          f"repository of --relay-image (repeatable; env {endpoints.ALLOW_RELAY_IMAGE_ENV}, "
                          "comma-separated)")
    run.add_argument(egress.CLUSTER_CIDR_FLAG, action="append", metavar="CIDR", type=_cidr, default=None,
                     help="an address range of the cluster (pods, services, nodes, metadata) that the relay's "
                          "HTTPS egress must not reach (repeatable; replaces the default "
                          f"{' '.join(egress.DEFAULT_CLUSTER_CIDRS)})")
    run.add_argument(egress.DNS_NAMESPACE_FLAG, default=egress.DEFAULT_DNS_NAMESPACE, metavar="NS",
                     help="namespace of the cluster's DNS pods, the only DNS the relay pods may query")
    run.add_argument(egress.DNS_POD_LABEL_FLAG, action="append", metavar="KEY=VALUE", type=_label, default=None,
                     help="label of the cluster's DNS pods (repeatable; default "
                          + ",".join(f"{k}={v}" for k, v in egress.DEFAULT_DNS_POD_LABELS) + ")")
    run.add_argument(egress.DNS_PORT_FLAG, action="append", metavar="PORT", type=int, default=None,
                     help="port the DNS pods listen on (repeatable; default 53; OpenShift's listen on 5353)")
    run.add_argument(egress.HTTPS_EGRESS_FLAG, choices=egress.HTTPS_EGRESS_MODES, default=egress.HTTPS_EGRESS_MODES[0],
                     help="the relay NetworkPolicy's HTTPS egress (8x8): to every address outside the "
                          f"{egress.CLUSTER_CIDR_FLAG} ranges, or none (when an FQDN policy of the network "
                          "plugin allows 8x8's hosts by name: NetworkPolicies add up, so it would not narrow "
                          "the first)")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _cidr(value: str) -> str:
    try:
        return egress.parse_cidr(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _label(value: str) -> tuple[str, str]:
    try:
        return egress.parse_label(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(parser: argparse.ArgumentParser, value: float, flag: str) -> None:
    if value <= 0:
        parser.error(f"{flag} must be a positive number of seconds, not {value}")


def relay_egress(args: argparse.Namespace) -> egress.RelayEgress:
    return egress.RelayEgress(
        cluster_cidrs=tuple(args.cluster_cidr or egress.DEFAULT_CLUSTER_CIDRS),
        dns_namespace=args.dns_namespace,
        dns_pod_labels=tuple(args.dns_pod_label or egress.DEFAULT_DNS_POD_LABELS),
        dns_ports=tuple(args.dns_port or egress.DEFAULT_DNS_PORTS),
        https=args.relay_https_egress,
    )


def peering_priority(peering: str | None, priority: int | None) -> int:
    """Replicas of one Deployment share their arguments, so an unset priority is drawn at random
    from a range wide enough that two replicas practically never tie (kopf's own advice for
    multi-pod operators, with a far wider range than $RANDOM)."""
    if priority is not None or peering is None:
        return priority or 0
    return 1 + secrets.randbelow(2**31 - 2)


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        memory_report.install_from_environment()  # before kopf is imported: its memory is traced too
    except ValueError as error:
        parser.error(str(error))
    _positive(parser, args.drift_interval, "--drift-interval")
    _positive(parser, args.rotation_grace, "--rotation-grace")
    if args.secret_grace < 0:
        parser.error("--secret-grace must not be negative")
    if args.key_propagation < 0:
        parser.error("--key-propagation must not be negative")
    if args.peering_lifetime < 5:
        parser.error("--peering-lifetime must be at least 5 seconds (the keep-alive is sent a few seconds earlier)")
    if args.auth0_concurrency < 1 or args.max_concurrent_reconciles < 1:
        parser.error("--auth0-concurrency and --max-concurrent-reconciles must be at least 1")
    if not args.dns_namespace:
        parser.error(f"{egress.DNS_NAMESPACE_FLAG} must name the namespace of the cluster's DNS pods")
    if any(not 0 < port < 65536 for port in args.dns_port or ()):
        parser.error(f"{egress.DNS_PORT_FLAG} must be a port from 1 to 65535")
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        parser.error(f"--metrics-port must be a TCP port, not {args.metrics_port}")
    import kopf  # imported late so `--help` stays fast

    from . import delivery, handlers, heap, metrics, tls_buffers, watch_json  # noqa: F401  (registers the handlers)
    from .kube import KubeApi
    from .runtime import OperatorConfig, Runtime

    config = OperatorConfig(
        relay_image=args.relay_image,
        drift_interval=args.drift_interval,
        rotation_grace=args.rotation_grace,
        key_propagation=args.key_propagation,
        auth0_concurrency_per_tenant=args.auth0_concurrency,
        max_concurrent_reconciles=args.max_concurrent_reconciles,
        namespaced=bool(args.namespace),
        endpoints=endpoints.EndpointPolicy(tuple(args.allow_auth0_domain), tuple(args.allow_sms_base_url),
                                           tuple(args.allow_state_store), tuple(args.allow_relay_image)),
        egress=relay_egress(args),
        peering_lifetime=args.peering_lifetime,
        secret_grace=args.secret_grace,
    )
    heap.limit_arenas()  # before the metrics server's thread starts
    if args.metrics_port is not None:
        metrics.serve(args.metrics_port)
    kopf.configure(verbose=args.log_level == "DEBUG")
    logging.getLogger().setLevel(args.log_level)
    if args.log_level != "DEBUG":
        # kopf logs every successful watch handler at INFO; with a Secret watch that is noise.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    watch_json.install()
    tls_buffers.install()
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=peering_priority(args.peering, args.priority),
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(runtime=Runtime(config, KubeApi.from_environment())),
    )


if __name__ == "__main__":
    main()
