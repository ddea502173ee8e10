"""show stat and show proc answers as haproxy 2.6.12 prints them, built from
the few fields a test sets: the fakes of the master CLI's answers for the
unit tests of the counters, the stats views and /metrics."""
import csv
import io

from appliance_api.system.haproxy_cli import Snapshot, parse_stat

# haproxy 2.6.12's show stat header, as printed here.
HEADER = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,"
FIELDS = HEADER[2:].rstrip(",").split(",")


def csv_text(*rows):
    """show stat's answer for rows, dicts of the fields that matter."""
    out = io.StringIO()
    out.write(HEADER + "\n")
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow([row.get(field, "") for field in FIELDS] + [""])
    return out.getvalue() + "\n"


def frontend(name="web", mode="http", stot=0, bytes_in=0, bytes_out=0, req_tot=0, hrsp_5xx=0,
             **more):
    row = {"pxname": name, "svname": "FRONTEND", "type": "0", "status": "OPEN", "mode": mode,
           "scur": "0", "rate": "0", "stot": str(stot), "bin": str(bytes_in),
           "bout": str(bytes_out), "dreq": "0", "req_tot": str(req_tot) if mode == "http" else "",
           "hrsp_5xx": str(hrsp_5xx) if mode == "http" else ""}
    row.update(more)
    return row


def server(backend="pool", name="m1", stot=0, status="UP", **more):
    row = {"pxname": backend, "svname": name, "type": "2", "status": status, "mode": "http",
           "stot": str(stot), "bin": "0", "bout": "0", "scur": "0", "lastchg": "7",
           "addr": "10.0.0.11:80", "check_status": "L7OK", "check_code": "200",
           "check_duration": "1", "hrsp_5xx": "0"}
    row.update(more)
    return row


def backend(name="pool", stot=0, **more):
    row = {"pxname": name, "svname": "BACKEND", "type": "1", "status": "UP", "mode": "http",
           "stot": str(stot), "bin": "0", "bout": "0", "scur": "0", "req_tot": "0",
           "hrsp_5xx": "0", "dreq": "0"}
    row.update(more)
    return row


def proc_text(current, old=()):
    lines = ["#<PID>          <type>          <reloads>       <uptime>        <version>",
             "100             master          %d [failed: 0]   0d00h00m10s     2.6.12" % len(old),
             "# workers", "%d             worker          0               0d00h00m10s     2.6.12"
             % current, "# old workers"]
    lines += ["%d             worker          1               0d00h00m10s     2.6.12" % pid
              for pid in old]
    return "\n".join(lines + ["# programs", "", ""])


def snapshot(current, rows, old=None):
    """What haproxy_cli.snapshots gives: the current worker's rows, and old
    workers' {pid: rows} (None: listed but did not answer)."""
    parsed = Snapshot.parse(proc_text(current, list(old or ())) + csv_text(*rows))
    for pid, old_rows in (old or {}).items():
        if old_rows is not None:
            parsed.rows[pid] = parse_stat(csv_text(*old_rows))
    return parsed
