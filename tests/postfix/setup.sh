#!/usr/bin/env bash
# A real MTA for tests/test_postfix.py: Postfix from Debian, listening on 127.0.0.1:2525 only.
#
#   dest.example    final destination: reader@dest.example is a mailbox, every other user is unknown
#                and bounced AFTER acceptance (so a DSN goes back to the envelope sender);
#   bounce.example  where those DSNs land: bounces+anything@bounce.example -> the Maildir
#                $SPOOL/bounce.example/bounces/ (recipient_delimiter +, as VERP needs).
#
# Idempotent: installs Postfix only if missing, (re)writes only our settings, starts or
# reloads. Run as root (.ci/run does). Port: $DIGEST_POSTFIX_PORT (default 2525).
set -euo pipefail
PORT="${DIGEST_POSTFIX_PORT:-2525}"
SPOOL=/var/spool/digest-postfix-test
export DEBIAN_FRONTEND=noninteractive

if ! command -v postconf >/dev/null 2>&1; then
    echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
    echo "postfix postfix/mailname string localhost" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postfix >/dev/null
fi

if ! id digesttest >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin digesttest
fi
uid="$(id -u digesttest)"
gid="$(id -g digesttest)"
install -d -o digesttest -g digesttest -m 0755 "$SPOOL"

cat >/etc/postfix/digest-test-mailboxes <<'EOF'
# Written by digest's tests/postfix/setup.sh (texthash: no postmap needed)
bounces@bounce.example    bounce.example/bounces/
reader@dest.example       dest.example/reader/
EOF

postconf -e \
    "inet_interfaces = loopback-only" \
    "recipient_delimiter = +" \
    "virtual_mailbox_domains = dest.example, bounce.example" \
    "virtual_mailbox_base = $SPOOL" \
    "virtual_mailbox_maps = texthash:/etc/postfix/digest-test-mailboxes" \
    "virtual_uid_maps = static:$uid" \
    "virtual_gid_maps = static:$gid" \
    "virtual_minimum_uid = 100" \
    "smtputf8_enable = no" \
    "maillog_file = /var/log/postfix.log"

# Our listener: 127.0.0.1:PORT, not chrooted, accepting unknown users of dest.example (they
# bounce later, as at a real provider that answers 250 first).
postconf -M "127.0.0.1:${PORT}/inet=127.0.0.1:${PORT} inet n - n - - smtpd"
postconf -P "127.0.0.1:${PORT}/inet/smtpd_reject_unlisted_recipient=no" \
    "127.0.0.1:${PORT}/inet/mynetworks=127.0.0.0/8" \
    "127.0.0.1:${PORT}/inet/smtpd_recipient_restrictions=permit_mynetworks,reject"

postfix check
if postfix status >/dev/null 2>&1; then
    postfix reload >/dev/null 2>&1
else
    postfix start >/dev/null 2>&1
fi

for _ in $(seq 1 50); do  # until it listens (bounded)
    if (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; then
        echo "postfix: listening on 127.0.0.1:${PORT}; Maildirs under ${SPOOL}"
        exit 0
    fi
    sleep 0.2
done
echo "postfix: not listening on 127.0.0.1:${PORT}" >&2
exit 1
