#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Deploy the ACL files to every Clarens host of a cluster, and the matching digest to every
# HAProxy front end, without taking the cluster down (docs/scaling.md).
#
#     conf/cluster/deploy-policy.sh ACL_DIR CLUSTER_FILE
#
# ACL_DIR is the source of truth (keep it in version control).  CLUSTER_FILE
# (conf/cluster/cluster.conf) names the hosts, with the address and port their Apache
# answers on, and the front ends.  Order matters: while the hosts switch from the old
# policy to the new one, the front ends accept both digests; once every host has the new
# one, they accept only it, and a host that missed the deployment is taken out.
#
# Needs, and checks before it changes anything (naming what is missing):
#   here: python3 with clarens (a checkout, or the package), ssh, rsync;
#   every host and front end: SSH as root with a key (no password prompt);
#   every host: rsync, apachectl, python3 with clarens;  every front end: systemctl, haproxy.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 ACL_DIR CLUSTER_FILE" >&2; exit 2; }
acl_dir=$1 cluster_file=$2
remote_acl=/etc/clarens/acl
python=/usr/bin/python3
ssh="ssh -o BatchMode=yes -o ConnectTimeout=10"

# 0. Prerequisites, here and on every machine, before anything changes.
missing=""
need() { missing="$missing
    $1"; }
command -v ssh >/dev/null 2>&1 || need "ssh here (apt-get install openssh-client)"
command -v rsync >/dev/null 2>&1 || need "rsync here (apt-get install rsync)"
$python -c "import clarens" 2>/dev/null || need "clarens for $python here (run this from a checkout, or install it)"
[ -d "$acl_dir" ] || need "the ACL directory $acl_dir"
if [ -n "$missing" ]; then
    echo "cannot deploy; missing:$missing" >&2
    exit 1
fi
members=$($python -m clarens.cluster list --cluster "$cluster_file") || exit 2
while read -r kind name address port url; do
    case $kind in
        host) tools="rsync apachectl" ;;
        *) tools="systemctl haproxy" ;;
    esac
    if ! lacking=$($ssh -n "root@$address" "for t in $tools; do command -v \$t >/dev/null 2>&1 || echo \$t; done
            $python -c 'import clarens' 2>/dev/null || [ $kind = front ] || echo 'clarens for $python'" 2>/dev/null)
    then
        need "SSH as root to $kind $name: ssh -o BatchMode=yes root@$address fails"
    elif [ -n "$lacking" ]; then
        need "on $kind $name ($address): $(echo $lacking)"
    fi
done <<EOF
$members
EOF
if [ -n "$missing" ]; then
    echo "cannot deploy; missing:$missing" >&2
    exit 1
fi

# 1. The files must load: the same validation a host makes at start.
$python -m clarens.acl --acl-dir "$acl_dir" validate
new=$($python -m clarens.cluster digest --acl-dir "$acl_dir" --env | sed -n 's/^CLARENS_POLICY_DIGEST=//p')
fronts=$(echo "$members" | awk '$1 == "front" {print $3}')

# 2. Front ends: accept the old digest and the new one.
for front in $fronts; do
    $ssh -n "root@$front" "set -e; f=/etc/default/haproxy; touch \$f
        old=\$(sed -n 's/^CLARENS_POLICY_DIGEST=//p' \$f)
        sed -i '/^CLARENS_POLICY_DIGEST=/d' \$f
        echo \"CLARENS_POLICY_DIGEST=\$old $new\" >> \$f
        systemctl reload haproxy"
done

# 3. Hosts, one at a time: the files, then a graceful restart (it loads them at once), then
#    wait until the host reports the new digest where the front ends reach it.
echo "$members" | awk '$1 == "host" {print $2, $3, $5}' | while read -r name address url; do
    rsync -a --delete --chmod=D755,F644 --include='*.acl' --exclude='*' -e "$ssh" "$acl_dir/" \
        "root@$address:$remote_acl/"
    $ssh -n "root@$address" "$python -m clarens.acl --acl-dir $remote_acl validate && apachectl graceful"
    tries=0
    until $ssh -n "root@$address" "$python -m clarens.cluster check --expect-policy $new $url" >/dev/null; do
        tries=$((tries + 1)); [ $tries -lt 60 ] || { echo "host $name did not load the new policy" >&2; exit 1; }
        sleep 1
    done
done

# 4. Front ends: only the new digest from now on.
for front in $fronts; do
    $ssh -n "root@$front" "set -e; f=/etc/default/haproxy
        sed -i '/^CLARENS_POLICY_DIGEST=/d' \$f
        echo 'CLARENS_POLICY_DIGEST=$new' >> \$f
        systemctl reload haproxy"
done
echo "deployed policy $new to every host of $cluster_file"
