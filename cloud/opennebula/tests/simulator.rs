//! The client against the XML-RPC simulator in `tests/simulator/` (OpenNebula's documented
//! request and reply formats, realistic VM states, injected faults), and the simulator itself
//! against OpenNebula's own Python bindings.

use std::process::Command;
use std::time::{Duration, Instant};

use opennebula::simulator::Simulator;
use opennebula::{Client, Error, ErrorCode, LcmState, PoolFilter, VmState};

const SESSION: &str = "oneadmin:secret";

fn start() -> Simulator {
    start_stepping(0.05)
}

/// A simulator whose VMs move one state further every `step_seconds`.
fn start_stepping(step_seconds: f64) -> Simulator {
    Simulator::start(SESSION, step_seconds).expect("python3 runs the simulator")
}

fn client(sim: &Simulator) -> Client {
    Client::new(&sim.endpoint, SESSION).unwrap()
}

async fn until_state(client: &Client, vm: i64, want: (VmState, LcmState)) -> opennebula::Vm {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = client.vm_info(vm).await.unwrap();
        if (info.state, info.lcm_state) == want {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "VM {vm} stuck at {:?}/{:?}",
            info.state,
            info.lcm_state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_vm_is_instantiated_runs_is_listed_and_terminated() {
    // Slow enough steps that the first look comes before the VM leaves Pending, even on a
    // machine busy with other tests (50 ms was not, in a full run).
    let sim = start_stepping(0.5);
    let one = client(&sim);
    assert!(!one.version().await.unwrap().is_empty());

    let extra = "CONPAAS_NODE = \"hello-node-0\"\nCONTEXT = [ CONPAAS_USER_DATA = \"e30=\", TOKEN = \"t\" ]";
    let vm = one
        .template_instantiate(0, "conpaas-t1", false, extra)
        .await
        .unwrap();
    let first = one.vm_info(vm).await.unwrap();
    assert_eq!(
        first.state,
        VmState::Pending,
        "a new VM waits for a host first"
    );
    let running = until_state(&one, vm, (VmState::Active, LcmState::RUNNING)).await;
    assert_eq!(running.name, "conpaas-t1");
    assert_eq!(
        running
            .user_template
            .get("CONPAAS_NODE")
            .map(String::as_str),
        Some("hello-node-0")
    );
    assert_eq!(running.ips.len(), 1);

    one.vm_update_merge(vm, "CONPAAS_ORPHANED = \"true\"")
        .await
        .unwrap();
    let updated = one.vm_info(vm).await.unwrap();
    assert_eq!(
        updated
            .user_template
            .get("CONPAAS_ORPHANED")
            .map(String::as_str),
        Some("true")
    );
    assert!(
        updated.user_template.contains_key("CONPAAS_NODE"),
        "merge keeps the others"
    );

    let listed = one.vm_pool(PoolFilter::All).await.unwrap();
    assert_eq!(listed.iter().map(|v| v.id).collect::<Vec<_>>(), [vm]);

    one.vm_action("terminate", vm).await.unwrap();
    let stopping = one.vm_info(vm).await.unwrap();
    assert!(stopping.lcm_state.is_stopping() || stopping.state == VmState::Done);
    until_state(&one, vm, (VmState::Done, LcmState(0))).await;
    assert!(
        one.vm_pool(PoolFilter::All).await.unwrap().is_empty(),
        "DONE VMs are not listed"
    );
    let again = one.vm_action("terminate", vm).await.unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::Action), "{again}");
}

#[tokio::test]
async fn refusals_and_broken_replies_map_to_errors() {
    let sim = start();
    let one = client(&sim);
    let wrong = Client::new(&sim.endpoint, "oneadmin:wrong").unwrap();
    assert_eq!(
        wrong.version().await.unwrap_err().code(),
        Some(ErrorCode::Authentication)
    );
    assert_eq!(
        one.vm_info(999).await.unwrap_err().code(),
        Some(ErrorCode::NoExists)
    );
    let no_memory = one.vm_allocate("NAME = \"x\"", false).await.unwrap_err();
    assert_eq!(no_memory.code(), Some(ErrorCode::Allocate), "{no_memory}");
    assert_eq!(
        one.template_instantiate(7, "x", false, "")
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::NoExists)
    );

    sim.fault("one.vm.info", "code:32768", 1).await.unwrap();
    assert_eq!(
        one.vm_info(0).await.unwrap_err().code(),
        Some(ErrorCode::Locked)
    );
    sim.fault("one.vmpool.info", "http500", 1).await.unwrap();
    match one.vm_pool(PoolFilter::All).await.unwrap_err() {
        Error::Transport { status, .. } => assert_eq!(status, Some(500)),
        other => panic!("expected a transport error, got {other}"),
    }
    sim.fault("one.vmpool.info", "garbage", 1).await.unwrap();
    assert!(matches!(
        one.vm_pool(PoolFilter::All).await.unwrap_err(),
        Error::Malformed { .. }
    ));
    sim.fault("one.system.version", "shape", 1).await.unwrap();
    let shape = one.version().await.unwrap_err();
    assert!(matches!(shape, Error::Malformed { .. }), "{shape}");
    // A fault lasts only as long as it was asked to.
    assert!(one.vm_pool(PoolFilter::All).await.is_ok());

    let closed = Client::new("http://127.0.0.1:1/RPC2", SESSION).unwrap();
    assert!(matches!(
        closed.version().await.unwrap_err(),
        Error::Transport { status: None, .. }
    ));
}

#[test]
fn opennebulas_own_python_bindings_accept_the_simulator() {
    let sim = start();
    let out = Command::new("python3")
        .args(["tests/simulator/pyone_check.py", &sim.endpoint, SESSION])
        .output()
        .expect("python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'pyone'"),
        "pyone is missing: pip install 'pyone==7.3.*' (.ci/run installs it)"
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("pyone ok"),
        "pyone against the simulator:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
}
