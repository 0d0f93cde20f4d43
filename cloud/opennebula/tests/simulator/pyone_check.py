#!/usr/bin/env python3
"""Checks the simulator with OpenNebula's own Python bindings (pyone): their calls must succeed
and their parsers must accept its replies, so the simulator is not shaped only by our client.

Usage: pyone_check.py http://127.0.0.1:PORT/RPC2 user:password
Exits 0 and prints "pyone ok" when every check passed.
"""

import sys
import time

import pyone


def main():
    endpoint, session = sys.argv[1], sys.argv[2]
    one = pyone.OneServer(endpoint, session=session)
    assert one.system.version(), "a version string"

    vm_id = one.template.instantiate(0, "pyone-check", False, 'CONPAAS_NODE = "n1"\nCONTEXT = [ TOKEN = "t" ]', False)
    assert isinstance(vm_id, int), vm_id
    deadline = time.time() + 10
    while True:
        vm = one.vm.info(vm_id)
        if (vm.STATE, vm.LCM_STATE) == (pyone.VM_STATE.ACTIVE, pyone.LCM_STATE.RUNNING):
            break
        assert time.time() < deadline, f"VM {vm_id} never ran: {vm.STATE}/{vm.LCM_STATE}"
        time.sleep(0.05)
    assert vm.NAME == "pyone-check", vm.NAME
    assert vm.USER_TEMPLATE.get("CONPAAS_NODE") == "n1", vm.USER_TEMPLATE
    assert vm.TEMPLATE["NIC"]["IP"], vm.TEMPLATE

    pool = one.vmpool.info(-2, -1, -1, -1)
    assert [v.ID for v in pool.VM] == [vm_id], [v.ID for v in pool.VM]

    allocated = one.vm.allocate('NAME = "raw"\nMEMORY = "128"\nCPU = "1"', False)
    assert allocated == vm_id + 1, allocated

    one.vm.update(allocated, 'ROLE = "web"', 1)
    assert one.vm.info(allocated).USER_TEMPLATE.get("ROLE") == "web"

    one.vm.action("terminate", vm_id)
    deadline = time.time() + 10
    while one.vm.info(vm_id).STATE != pyone.VM_STATE.DONE:
        assert time.time() < deadline, "never DONE"
        time.sleep(0.05)
    assert [v.ID for v in one.vmpool.info(-2, -1, -1, -1).VM] == [allocated]

    try:
        one.vm.info(999)
        raise AssertionError("a missing VM must fail")
    except pyone.OneNoExistsException:
        pass
    try:
        pyone.OneServer(endpoint, session="someone:wrong").vm.info(vm_id)
        raise AssertionError("a wrong session must fail")
    except pyone.OneAuthenticationException:
        pass
    print("pyone ok")


if __name__ == "__main__":
    main()
