# shellcheck shell=bash
# pods_forwarded: traffic between pods on the node's bridge (cni0) is forwarded even when
# the FORWARD policy is DROP. A Docker engine that was the one to turn ip_forward on (it
# started before the node) sets that policy; ../shared/kube-node's own chain only RETURNs
# pod-to-pod traffic, which then meets the policy: every Service call between pods (a
# worker to its PostgreSQL) times out. The rule added is the one that policy needs, for
# the bridge alone; nothing changes where the policy is ACCEPT.
pods_forwarded() {
  command -v iptables >/dev/null 2>&1 || return 0
  if iptables -w 5 -S FORWARD 2>/dev/null | grep -qx -- '-P FORWARD DROP' \
    && ! iptables -w 5 -C FORWARD -i cni0 -o cni0 -j ACCEPT 2>/dev/null; then
    iptables -w 5 -I FORWARD 1 -i cni0 -o cni0 -m comment --comment "statuslist e2e: pods to pods" -j ACCEPT
    echo "$1: the FORWARD policy is DROP (a Docker engine started before the node): traffic between pods accepted on cni0"
  fi
}
