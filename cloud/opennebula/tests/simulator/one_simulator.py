#!/usr/bin/env python3
"""An OpenNebula front-end simulator speaking the documented XML-RPC API, for tests.

It answers the calls a VM lifecycle needs -- one.system.version, one.template.instantiate,
one.vm.allocate, one.vm.info, one.vmpool.info, one.vm.action, one.vm.update -- in OpenNebula's reply format
([success, result-or-message, error-code]) with OpenNebula's error codes, and keeps VMs in
memory moving through realistic states: PENDING -> ACTIVE/PROLOG -> ACTIVE/BOOT ->
ACTIVE/RUNNING, and on terminate ACTIVE/SHUTDOWN -> DONE, one step per --step seconds.

Faults are injected with calls that need no session:
  sim.fault(method, kind, count)  kind: "code:<n>" (an OpenNebula error), "http500",
                                  "garbage" (a body that is not XML-RPC), "shape" (a reply that
                                  is not [success, result, code]), "hang" (no reply for 35 s)
  sim.reset()                     forget every VM and fault
  sim.vms()                       every VM's ID, state and LCM state, DONE included

Usage: one_simulator.py --port N [--auth oneadmin:secret] [--step 0.2]
It prints "listening on <port>" once it accepts calls.
"""

import argparse
import io
import re
import threading
import time
import xmlrpc.client
from http.server import BaseHTTPRequestHandler
from socketserver import ThreadingMixIn
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer
from xml.sax.saxutils import escape

AUTHENTICATION, AUTHORIZATION, NO_EXISTS, ACTION, XML_RPC_API, INTERNAL, ALLOCATE, LOCKED = (
    0x0100, 0x0200, 0x0400, 0x0800, 0x1000, 0x2000, 0x4000, 0x8000)
PENDING, ACTIVE, DONE = 1, 3, 6
LCM_INIT, PROLOG, BOOT, RUNNING, SHUTDOWN = 0, 1, 2, 3, 12

# Templates the front-end knows: ID -> template text.
TEMPLATES = {0: 'NAME = "conpaas"\nCPU = "1"\nMEMORY = "512"\nNIC = [ NETWORK_ID = "0" ]\n'}


def parse_template(text):
    """OpenNebula template text -> {ATTR: value or {KEY: value}} (last one wins)."""
    attrs = {}
    pattern = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\[(?:[^\]"]|"(?:[^"\\]|\\.)*")*\]|"(?:[^"\\]|\\.)*"|[^\s\]]+)', re.S)
    pos = 0
    while True:
        m = pattern.search(text, pos)
        if not m:
            break
        key, raw = m.group(1).upper(), m.group(2)
        if raw.startswith('['):
            inner = {}
            for k, v in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,\]]+)', raw[1:-1]):
                inner[k.upper()] = unquote(v)
            attrs[key] = inner
        else:
            attrs[key] = unquote(raw)
        pos = m.end()
    return attrs


def unquote(v):
    if v.startswith('"') and v.endswith('"'):
        return v[1:-1].replace('\\"', '"').replace('\\\\', '\\')
    return v


class Vm:
    def __init__(self, vm_id, name, template, uid, step, ip):
        self.id, self.name, self.template, self.uid = vm_id, name, template, uid
        self.created = time.time()
        self.stime = int(self.created)
        self.step = step
        self.terminated_at = None
        self.ip = ip

    def states(self):
        now = time.time()
        if self.terminated_at is not None:
            return (DONE, LCM_INIT) if now - self.terminated_at >= self.step else (ACTIVE, SHUTDOWN)
        steps = int((now - self.created) / self.step) if self.step > 0 else 3
        if steps <= 0:
            return PENDING, LCM_INIT
        return ACTIVE, min(steps, RUNNING)  # PROLOG, BOOT, then RUNNING

    def xml(self):
        state, lcm = self.states()
        context = self.template.get('CONTEXT', {})
        ctx = ''.join(f'<{k}><![CDATA[{v}]]></{k}>' for k, v in context.items()) if isinstance(context, dict) else ''
        user = ''.join(f'<{k}><![CDATA[{v}]]></{k}>' for k, v in self.template.items()
                       if isinstance(v, str) and k not in ('NAME', 'CPU', 'MEMORY', 'VCPU'))
        return (f'<VM><ID>{self.id}</ID><UID>{self.uid}</UID><GID>0</GID><UNAME>oneadmin</UNAME><GNAME>oneadmin</GNAME>'
                f'<NAME>{escape(self.name)}</NAME><PERMISSIONS><OWNER_U>1</OWNER_U><OWNER_M>1</OWNER_M><OWNER_A>0</OWNER_A>'
                f'<GROUP_U>0</GROUP_U><GROUP_M>0</GROUP_M><GROUP_A>0</GROUP_A><OTHER_U>0</OTHER_U><OTHER_M>0</OTHER_M>'
                f'<OTHER_A>0</OTHER_A></PERMISSIONS><LAST_POLL>0</LAST_POLL><STATE>{state}</STATE><LCM_STATE>{lcm}</LCM_STATE>'
                f'<PREV_STATE>{state}</PREV_STATE><PREV_LCM_STATE>{lcm}</PREV_LCM_STATE><RESCHED>0</RESCHED>'
                f'<STIME>{self.stime}</STIME><ETIME>0</ETIME><DEPLOY_ID>one-{self.id}</DEPLOY_ID><MONITORING/>'
                f'<TEMPLATE><CONTEXT>{ctx}</CONTEXT><CPU><![CDATA[1]]></CPU><MEMORY><![CDATA[512]]></MEMORY>'
                f'<NIC><IP><![CDATA[{self.ip}]]></IP><NETWORK_ID><![CDATA[0]]></NETWORK_ID><NIC_ID><![CDATA[0]]></NIC_ID></NIC>'
                f'<VMID><![CDATA[{self.id}]]></VMID></TEMPLATE><USER_TEMPLATE>{user}</USER_TEMPLATE><HISTORY_RECORDS/></VM>')


class Front:
    def __init__(self, auth, step):
        self.auth, self.step = auth, step
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.vms, self.next_id, self.faults = {}, 0, {}
        return True

    def check(self, method, session):
        if session != self.auth:
            raise Refusal(f'[{method}] User couldn\'t be authenticated, aborting call.', AUTHENTICATION)

    def vm(self, method, vm_id):
        vm = self.vms.get(vm_id)
        if vm is None:
            raise Refusal(f'[{method}] Error getting virtual machine [{vm_id}].', NO_EXISTS)
        return vm

    def create(self, name, template):
        vm_id = self.next_id
        self.next_id += 1
        if not name:
            name = template.get('NAME', 'one') + f'-{vm_id}'
        self.vms[vm_id] = Vm(vm_id, name, template, 0, self.step, f'10.0.{vm_id // 250}.{vm_id % 250 + 2}')
        return vm_id


class Refusal(Exception):
    def __init__(self, message, code):
        super().__init__(message)
        self.message, self.code = message, code


def api(front):
    """The XML-RPC functions, by their OpenNebula names."""
    def guarded(method, fn):
        def call(session, *args):
            with front.lock:
                try:
                    front.check(method, session)
                    return [True, fn(*args), 0]
                except Refusal as r:
                    return [False, r.message, r.code]
                except TypeError as e:
                    return [False, f'[{method}] Wrong parameters: {e}', XML_RPC_API]
        return call

    def version():
        return '6.10.0'

    def instantiate(template_id, name, hold=False, extra='', persistent=False):
        if template_id not in TEMPLATES:
            raise Refusal(f'[one.template.instantiate] Error getting template [{template_id}].', NO_EXISTS)
        template = parse_template(TEMPLATES[template_id])
        template.update(parse_template(extra))
        return front.create(name, template)

    def allocate(template_text, hold=False):
        template = parse_template(template_text)
        if 'MEMORY' not in template:
            raise Refusal('[one.vm.allocate] Error allocating a new virtual machine template. No MEMORY in template.', ALLOCATE)
        return front.create(template.get('NAME', ''), template)

    def info(vm_id, decrypt=False):
        return front.vm('one.vm.info', vm_id).xml()

    def pool(filter_flag, start, end, state=-1, *rest):
        vms = [vm for vm in front.vms.values()
               if (start < 0 or vm.id >= start) and (end < 0 or vm.id <= end)
               and (state == -2 or (state == -1 and vm.states()[0] != DONE) or vm.states()[0] == state)]
        return '<VM_POOL>' + ''.join(vm.xml() for vm in vms) + '</VM_POOL>'

    def action(name, vm_id):
        vm = front.vm('one.vm.action', vm_id)
        if name not in ('terminate', 'terminate-hard'):
            raise Refusal(f'[one.vm.action] Action "{name}" is not supported by this simulator.', XML_RPC_API)
        if vm.states()[0] == DONE or vm.terminated_at is not None:
            raise Refusal(f'[one.vm.action] Error performing action "{name}": This action is not available for state DONE', ACTION)
        vm.terminated_at = time.time()
        return vm_id

    def update(vm_id, template_text, mode=0):
        vm = front.vm('one.vm.update', vm_id)
        attrs = parse_template(template_text)
        if mode == 0:
            vm.template = {k: v for k, v in vm.template.items() if k in ('NAME', 'CPU', 'MEMORY', 'VCPU', 'CONTEXT', 'NIC')}
        vm.template.update(attrs)
        return vm_id

    return {
        'one.system.version': guarded('one.system.version', version),
        'one.vm.update': guarded('one.vm.update', update),
        'one.template.instantiate': guarded('one.template.instantiate', instantiate),
        'one.vm.allocate': guarded('one.vm.allocate', allocate),
        'one.vm.info': guarded('one.vm.info', info),
        'one.vmpool.info': guarded('one.vmpool.info', pool),
        'one.vm.action': guarded('one.vm.action', action),
    }


class Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ('/RPC2', '/')

    def do_POST(self):
        length = int(self.headers.get('content-length', 0))
        body = self.rfile.read(length)
        try:
            method = xmlrpc.client.loads(body)[1]
        except Exception:
            method = None
        fault = self.server.front.take_fault(method)
        if fault is None:
            self.rfile = io.BytesIO(body)
            return super().do_POST()
        kind = fault
        if kind == 'http500':
            self.send_response(500)
            self.send_header('content-length', '0')
            self.end_headers()
            return
        if kind == 'hang':
            time.sleep(35)
        if kind == 'garbage':
            reply = b'<html>proxy error</html>'
        elif kind == 'shape':
            reply = xmlrpc.client.dumps(('not a list',), methodresponse=True).encode()
        elif kind.startswith('code:'):
            code = int(kind[5:])
            reply = xmlrpc.client.dumps(([False, f'[{method}] injected error {code}', code],), methodresponse=True).encode()
        else:
            reply = b''
        self.send_response(200)
        self.send_header('content-type', 'text/xml')
        self.send_header('content-length', str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


class Server(ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--auth', default='oneadmin:secret')
    parser.add_argument('--step', type=float, default=0.2)
    args = parser.parse_args()
    front = Front(args.auth, args.step)

    def take_fault(method):
        with front.lock:
            entry = front.faults.get(method)
            if not entry:
                return None
            kind, left = entry
            if left <= 1:
                del front.faults[method]
            else:
                front.faults[method] = (kind, left - 1)
            return kind

    def fault(method, kind, count):
        with front.lock:
            front.faults[method] = (kind, count)
        return True

    def vms():
        with front.lock:
            return [[vm.id, *vm.states()] for vm in front.vms.values()]

    def reset():
        with front.lock:
            return front.reset()

    front.take_fault = take_fault
    server = Server(('127.0.0.1', args.port), requestHandler=Handler, logRequests=False, allow_none=True)
    server.front = front
    for name, fn in api(front).items():
        server.register_function(fn, name)
    server.register_function(fault, 'sim.fault')
    server.register_function(reset, 'sim.reset')
    server.register_function(vms, 'sim.vms')
    print(f'listening on {args.port}', flush=True)
    server.serve_forever()


if __name__ == '__main__':
    main()
