//! VM documents: `<VM>` as `one.vm.info` returns it and `<VM_POOL>` from `one.vmpool.info`.

use std::collections::BTreeMap;

use xml::reader::{EventReader, XmlEvent};

/// A VM's `STATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// 0
    Init,
    /// 1: waiting for a host.
    Pending,
    /// 2: held by its owner.
    Hold,
    /// 3: deployed; `LCM_STATE` says where in its life.
    Active,
    /// 4
    Stopped,
    /// 5
    Suspended,
    /// 6: gone.
    Done,
    /// 7 (deprecated by OpenNebula).
    Failed,
    /// 8
    Poweroff,
    /// 9
    Undeployed,
    /// 10: its images are being cloned.
    Cloning,
    /// 11
    CloningFailure,
    /// A number this client does not know.
    Other(i32),
}

impl VmState {
    /// The state from its number.
    pub fn from_code(code: i32) -> Self {
        match code {
            0 => Self::Init,
            1 => Self::Pending,
            2 => Self::Hold,
            3 => Self::Active,
            4 => Self::Stopped,
            5 => Self::Suspended,
            6 => Self::Done,
            7 => Self::Failed,
            8 => Self::Poweroff,
            9 => Self::Undeployed,
            10 => Self::Cloning,
            11 => Self::CloningFailure,
            other => Self::Other(other),
        }
    }
}

/// A VM's `LCM_STATE` (meaningful while `STATE` is ACTIVE), by OpenNebula's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LcmState(pub i32);

impl LcmState {
    /// Files are being copied to the host.
    pub const PROLOG: LcmState = LcmState(1);
    /// The hypervisor is starting the VM.
    pub const BOOT: LcmState = LcmState(2);
    /// Running.
    pub const RUNNING: LcmState = LcmState(3);
    /// Files are being copied back / cleaned after the VM stopped.
    pub const EPILOG: LcmState = LcmState(11);
    /// Shutting down.
    pub const SHUTDOWN: LcmState = LcmState(12);
    /// Being deleted.
    pub const CLEANUP_DELETE: LcmState = LcmState(23);
    /// The hypervisor lost track of it.
    pub const UNKNOWN: LcmState = LcmState(16);
    /// Booting failed.
    pub const BOOT_FAILURE: LcmState = LcmState(36);

    /// A `*_FAILURE` state (36..=50 but the non-failure 43 and 45) or the old FAILURE (14):
    /// the VM is not going to run without help. (UNKNOWN is not one: the VM may still run.)
    pub fn is_failure(self) -> bool {
        matches!(self.0, 14 | 36..=42 | 44 | 46..=50)
    }

    /// Shutting down or being cleaned up.
    pub fn is_stopping(self) -> bool {
        matches!(self.0, 10..=13 | 15 | 18 | 23 | 29 | 30)
    }
}

/// A VM as OpenNebula describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Vm {
    /// `ID`.
    pub id: i64,
    /// `NAME`.
    pub name: String,
    /// `STATE`.
    pub state: VmState,
    /// `LCM_STATE`.
    pub lcm_state: LcmState,
    /// `STIME`: when it was created (seconds since the epoch).
    pub start_time: i64,
    /// `TEMPLATE/NIC/IP` of each NIC, in order.
    pub ips: Vec<String>,
    /// `USER_TEMPLATE` attributes with a plain value.
    pub user_template: BTreeMap<String, String>,
}

/// One XML element with its text and children.
#[derive(Debug, Default)]
struct Element {
    name: String,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }
}

fn parse_tree(xml: &str) -> Result<Element, String> {
    let mut stack: Vec<Element> = vec![Element::default()];
    for event in EventReader::from_str(xml) {
        match event.map_err(|e| format!("not XML: {e}"))? {
            XmlEvent::StartElement { name, .. } => stack.push(Element {
                name: name.local_name,
                ..Default::default()
            }),
            XmlEvent::EndElement { .. } => {
                let done = stack.pop().ok_or("unbalanced XML")?;
                stack
                    .last_mut()
                    .ok_or("unbalanced XML")?
                    .children
                    .push(done);
            }
            XmlEvent::Characters(text) | XmlEvent::CData(text) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            _ => {}
        }
    }
    let mut root = stack.pop().ok_or("empty document")?;
    root.children.pop().ok_or_else(|| "empty document".into())
}

impl Vm {
    /// Parses a `<VM>` document.
    pub fn from_xml(xml: &str) -> Result<Vm, String> {
        let root = parse_tree(xml)?;
        if root.name != "VM" {
            return Err(format!("expected <VM>, got <{}>", root.name));
        }
        Vm::from_element(&root)
    }

    /// Parses a `<VM_POOL>` document.
    pub fn pool_from_xml(xml: &str) -> Result<Vec<Vm>, String> {
        let root = parse_tree(xml)?;
        if root.name != "VM_POOL" {
            return Err(format!("expected <VM_POOL>, got <{}>", root.name));
        }
        root.children
            .iter()
            .filter(|c| c.name == "VM")
            .map(Vm::from_element)
            .collect()
    }

    fn from_element(vm: &Element) -> Result<Vm, String> {
        let number = |field: &str| -> Result<i64, String> {
            vm.text_of(field)
                .ok_or_else(|| format!("<VM> has no <{field}>"))?
                .parse()
                .map_err(|_| format!("<VM><{field}> is not a number"))
        };
        let ips = vm
            .child("TEMPLATE")
            .map(|t| {
                t.children
                    .iter()
                    .filter(|c| c.name == "NIC")
                    .filter_map(|nic| nic.text_of("IP").map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let user_template = vm
            .child("USER_TEMPLATE")
            .map(|t| {
                t.children
                    .iter()
                    .filter(|c| c.children.is_empty())
                    .map(|c| (c.name.clone(), c.text.trim().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Vm {
            id: number("ID")?,
            name: vm.text_of("NAME").unwrap_or_default().to_string(),
            state: VmState::from_code(number("STATE")? as i32),
            lcm_state: LcmState(number("LCM_STATE")? as i32),
            start_time: vm
                .text_of("STIME")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
            ips,
            user_template,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: &str = r#"<VM><ID>7</ID><UID>0</UID><NAME>conpaas-abc</NAME><STATE>3</STATE><LCM_STATE>3</LCM_STATE>
        <STIME>1700000000</STIME><TEMPLATE><CONTEXT><TOKEN><![CDATA[t]]></TOKEN></CONTEXT>
        <NIC><IP><![CDATA[10.0.0.5]]></IP><NETWORK_ID>0</NETWORK_ID></NIC><NIC><IP>10.1.0.5</IP></NIC></TEMPLATE>
        <USER_TEMPLATE><CONPAAS_NODE><![CDATA[hello-node-0]]></CONPAAS_NODE><NESTED><A>1</A></NESTED></USER_TEMPLATE></VM>"#;

    #[test]
    fn a_vm_document_parses_with_nics_and_user_attributes() {
        let vm = Vm::from_xml(VM).unwrap();
        assert_eq!((vm.id, vm.name.as_str()), (7, "conpaas-abc"));
        assert_eq!(
            (vm.state, vm.lcm_state),
            (VmState::Active, LcmState::RUNNING)
        );
        assert_eq!(vm.ips, ["10.0.0.5", "10.1.0.5"]);
        assert_eq!(
            vm.user_template.get("CONPAAS_NODE").map(String::as_str),
            Some("hello-node-0")
        );
        assert!(
            !vm.user_template.contains_key("NESTED"),
            "only plain attributes"
        );
        let pool = Vm::pool_from_xml(&format!("<VM_POOL>{VM}{VM}</VM_POOL>")).unwrap();
        assert_eq!(pool.len(), 2);
        assert_eq!(Vm::pool_from_xml("<VM_POOL/>").unwrap(), vec![]);
    }

    #[test]
    fn malformed_documents_say_what_is_wrong() {
        assert!(
            Vm::from_xml("<VM><ID>x</ID></VM>")
                .unwrap_err()
                .contains("<ID> is not a number")
        );
        assert!(
            Vm::from_xml("<VM><ID>1</ID></VM>")
                .unwrap_err()
                .contains("no <STATE>")
        );
        assert!(
            Vm::from_xml("<HOST/>")
                .unwrap_err()
                .contains("expected <VM>")
        );
        assert!(Vm::from_xml("<VM><ID>1").unwrap_err().contains("not XML"));
    }

    #[test]
    fn lcm_states_classify() {
        assert!(LcmState::BOOT_FAILURE.is_failure() && !LcmState::UNKNOWN.is_failure());
        assert!(!LcmState::RUNNING.is_failure() && !LcmState(43).is_failure());
        assert!(LcmState::SHUTDOWN.is_stopping() && LcmState::EPILOG.is_stopping());
        assert!(!LcmState::PROLOG.is_stopping());
    }
}
