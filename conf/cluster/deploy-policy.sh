#!/bin/sh
# Deploy the ACL files to every Clarens host of a cluster, and the matching digest to
# every HAProxy front end, without taking the cluster down (docs/scaling.md).
#
#     conf/cluster/deploy-policy.sh ACL_DIR "HOST1 HOST2 HOST3" "FRONT1 FRONT2"
#
# ACL_DIR is the source of truth (keep it in version control).  Run from a checkout of
# Clarens (or where it is installed) on an admin machine with SSH access as root to the
# hosts and front ends.  Order matters: while the hosts switch from the old policy to
# the new one, the front ends accept both digests; once every host has the new one,
# they accept only it, and a host that missed the deployment is taken out.
set -eu
acl_dir=$1 hosts=$2 fronts=$3
remote_acl=/etc/clarens/acl
python=/usr/bin/python3

# 1. The files must load: the same validation a host makes at start.
$python -m clarens.acl --acl-dir "$acl_dir" validate
new=$($python -m clarens.cluster digest --acl-dir "$acl_dir" --env | sed -n 's/^CLARENS_POLICY_DIGEST=//p')

# 2. Front ends: accept the old digest and the new one.
for front in $fronts; do
    ssh "root@$front" "set -e; f=/etc/default/haproxy; touch \$f
        old=\$(sed -n 's/^CLARENS_POLICY_DIGEST=//p' \$f)
        sed -i '/^CLARENS_POLICY_DIGEST=/d' \$f
        echo \"CLARENS_POLICY_DIGEST=\$old $new\" >> \$f
        systemctl reload haproxy"
done

# 3. Hosts, one at a time: the files, then a graceful restart (it loads them at once), then
#    wait until the host reports the new digest.
for host in $hosts; do
    rsync -a --delete --chmod=D755,F644 --include='*.acl' --exclude='*' "$acl_dir/" "root@$host:$remote_acl/"
    ssh "root@$host" "$python -m clarens.acl --acl-dir $remote_acl validate && apachectl graceful"
    tries=0
    until ssh "root@$host" "curl -fsS http://127.0.0.1/clarens/health" | grep -q "\"policy_digest\":\"$new\""; do
        tries=$((tries + 1)); [ $tries -lt 60 ] || { echo "$host did not load the new policy" >&2; exit 1; }
        sleep 1
    done
done

# 4. Front ends: only the new digest from now on.
for front in $fronts; do
    ssh "root@$front" "set -e; f=/etc/default/haproxy
        sed -i '/^CLARENS_POLICY_DIGEST=/d' \$f
        echo 'CLARENS_POLICY_DIGEST=$new' >> \$f
        systemctl reload haproxy"
done
echo "deployed policy $new to: $hosts"
