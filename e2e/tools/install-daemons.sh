#!/usr/bin/env bash
# Installs the Debian daemons the web hosting services run (README, "Service daemons"), only
# those missing, so that `make test` and `.ci/run` work on a fresh machine. Installed daemons
# must not start (a Debian nginx would take port 80 on every address): policy-rc.d refuses every
# start while the packages install. Needs root (or sudo) when something is missing.
set -euo pipefail

need_apt=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
compgen -G '/usr/sbin/php-fpm*' >/dev/null || need_apt+=(php-fpm php-mysql php-xml php-mbstring php-gd php-curl php-zip php-intl php-redis)
command -v redis-server >/dev/null || need_apt+=(redis-server)
[ -x /usr/sbin/mariadbd ] && [ -e /usr/lib/galera/libgalera_smm.so ] && command -v mariabackup >/dev/null \
  || need_apt+=(mariadb-server mariadb-client galera-4 mariadb-backup socat)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
[ -x /usr/share/tomcat10/bin/catalina.sh ] || need_apt+=(tomcat10)
# The java e2e test's WAR carries Debian's JDBC driver.
[ -e /usr/share/java/mariadb-java-client.jar ] || need_apt+=(libmariadb-java)
# The filesystem service: glusterd and its CLI on storage nodes, the FUSE client on the nodes
# that mount a volume.
command -v glusterd >/dev/null || [ -x /usr/sbin/glusterd ] || need_apt+=(glusterfs-server)
command -v mount.glusterfs >/dev/null || [ -x /sbin/mount.glusterfs ] || need_apt+=(glusterfs-client)
# The mapreduce service's Spark runs on Java 17 (tomcat10 brings it too).
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
# The WordPress e2e test uploads Debian's WordPress.
[ -e /usr/share/wordpress/wp-settings.php ] || need_apt+=(wordpress)
# Its default theme is only a recommendation (not installed here): without it, posts render as
# empty pages.
[ -d /usr/share/wordpress/wp-content/themes/twentytwentythree ] || need_apt+=(wordpress-theme-twentytwentythree)
((${#need_apt[@]})) || exit 0

sudo=
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "installing ${need_apt[*]} needs root"; exit 1; }
  sudo=sudo
fi
added_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  added_policy=1
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
[ -z "$added_policy" ] || $sudo rm -f /usr/sbin/policy-rc.d
