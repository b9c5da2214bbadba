#!/bin/sh
# udhcpc's hook on the platter rescue medium: configure the card, the
# default route and the name servers it was given.
case "$1" in
    deconfig)
        ifconfig "$interface" 0.0.0.0 up
        ;;
    bound | renew)
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
        if [ -n "$router" ]; then
            while route del default gw 0.0.0.0 dev "$interface" 2>/dev/null; do :; done
            for gateway in $router; do
                route add default gw "$gateway" dev "$interface"
                break
            done
        fi
        # A card given no name servers keeps another card's.
        if [ -n "$dns" ]; then
            : >/etc/resolv.conf
            [ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
            for server in $dns; do
                echo "nameserver $server" >>/etc/resolv.conf
            done
        fi
        ;;
esac
exit 0
