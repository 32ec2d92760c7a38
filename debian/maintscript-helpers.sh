# SPDX-License-Identifier: Apache-2.0
# Functions the maintainer scripts share: debian/rules puts this file in place of the line
# "#CLARENS_HELPERS#" in the built postinst, prerm and postrm (a postrm cannot source a file
# of the package: it may be gone by then).

# The command that does ACTION to the service NAME on this system, as an administrator types it
# (the Apache instance apache2-NAME is apache2@NAME to systemd).
service_command() {
    if [ -d /run/systemd/system ]; then
        case "$1" in
            apache2-*) echo "systemctl $2 apache2@${1#apache2-}" ;;
            *) echo "systemctl $2 $1" ;;
        esac
    else
        echo "service $1 $2"
    fi
}

# invoke-rc.d NAME ACTION; an Apache instance apache2-NAME is the unit apache2@NAME under systemd.
run_service() {
    case "$1" in
        apache2-*)
            if [ -d /run/systemd/system ]; then
                deb-systemd-invoke "$2" "apache2@${1#apache2-}.service" >/dev/null 2>&1
                return
            fi
            ;;
    esac
    invoke-rc.d "$1" "$2" >/dev/null 2>&1
}

# ACTION (start, restart, reload) the service NAME through invoke-rc.d.  Where the init system or
# policy-rc.d does not allow it (a chroot or container without an init system), or it fails, say
# so with the exact command, and WHY it matters.
service_action() {
    name=$1 action=$2 why=$3
    query=0
    invoke-rc.d --query "$name" "$action" >/dev/null 2>&1 || query=$?
    if [ "$query" -eq 104 ] || [ "$query" -eq 105 ]; then      # allowed, or no policy says otherwise
        if run_service "$name" "$action"; then
            return 0
        fi
        reason="invoke-rc.d $name $action failed"
    else
        reason="invoke-rc.d may not $action services here: no init system, or policy-rc.d says no"
    fi
    echo "clarens: could not $action $name ($reason)." >&2
    echo "  $why, run:  $(service_command "$name" "$action")" >&2
}

# Whether the Apache of configuration directory suffix SUFFIX ("" or "-clarens") is running.
apache_running() {
    pid=$(cat "/run/apache2$1/apache2.pid" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# ACTION (reload or restart) the Apache of suffix SUFFIX so that it serves its configuration as it
# is now (a stopped one is started); if that cannot be done, say so with the exact command.
apache_action() {
    action=$1 suffix=$2
    apache_running "$suffix" || action=restart
    if ! APACHE_CONFDIR=/etc/apache2$suffix apache2ctl configtest >/dev/null 2>&1; then
        echo "clarens: did not $action apache2$suffix: its configuration fails apache2ctl configtest." >&2
        echo "  Fix it, then run:  $(service_command "apache2$suffix" "$action")" >&2
        return 0
    fi
    service_action "apache2$suffix" "$action" "For Apache to serve Clarens as the package left it"
}

# Clarens runs in an Apache of its own (clarens-admin apache-instance dedicated).
dedicated() {
    [ -d /etc/apache2-clarens ]
}

# a2enmod, a2enconf... for that instance, with its own records.
instance_a2() {
    APACHE_CONFDIR=/etc/apache2-clarens APACHE_STATE_DIRECTORY=/var/lib/apache2-clarens "$@"
}
