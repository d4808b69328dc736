// `logical` mode: what a Pinot controller checks on POST /logicalTables (create) or
// PUT /logicalTables/{name} (update, input "update": true), in its order, with Pinot's own
// classes (PinotLogicalTableResource -> PinotHelixResourceManager.addLogicalTableConfig /
// updateLogicalTableConfig -> LogicalTableConfigUtils.validateLogicalTableConfig). Like the
// controller, it stops at the first refusal. Keys Pinot's parse -> serialise round trip drops are
// reported as in `check` (the controller's "unrecognizedProperties").
//
// What the controller reads from ZooKeeper comes from the input instead: "physical_tables" are
// the cluster's table configs (existence of every non-multiCluster physical table; no table may
// carry the logical name), "schemas" its schemas (one must be named like the logical table), and
// the broker tenants are those of the given tables (or "broker_tenants"). A create assumes no
// logical table of that name exists yet; an update assumes one does. Left out: access control,
// the broker resource update and the refresh message sent to brokers.
package cdc.pinot;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.commons.lang3.StringUtils;
import org.apache.commons.lang3.tuple.Pair;
import org.apache.pinot.common.utils.DatabaseUtils;
import org.apache.pinot.common.utils.LogicalTableConfigUtils;
import org.apache.pinot.common.utils.config.TagNameUtils;
import org.apache.pinot.spi.config.table.TableConfig;
import org.apache.pinot.spi.data.LogicalTableConfig;
import org.apache.pinot.spi.data.PhysicalTableConfig;
import org.apache.pinot.spi.utils.JsonUtils;
import org.apache.pinot.spi.utils.builder.TableNameBuilder;

final class LogicalCheck {
  private LogicalCheck() {
  }

  static void run(Main.JsonLines lines) throws Exception {
    String line;
    while ((line = lines.next()) != null) {
      lines.write(checkLine(line));
      lines.flush();
    }
  }

  /** One input line -> one result; never throws. */
  static Map<String, Object> checkLine(String line) {
    String id = null;
    List<String> errors = new ArrayList<>();
    Set<String> dropped = new LinkedHashSet<>();
    try {
      JsonNode input = JsonUtils.stringToJsonNode(line);
      id = input.path("id").asText(null);
      Cluster cluster = Cluster.of(input, errors);
      if (errors.isEmpty()) {
        check(input.path("logical"), input.path("update").asBoolean(false), cluster, dropped);
      }
    } catch (Throwable t) {
      errors.add("logical: " + ContractCheck.message(t));
    }
    Map<String, Object> result = new LinkedHashMap<>();
    result.put("id", id);
    result.put("ok", errors.isEmpty() && dropped.isEmpty());
    result.put("errors", errors);
    result.put("dropped_keys", new ArrayList<>(dropped));
    return result;
  }

  /** The controller's path for one logical table config; the first refusal throws. */
  private static void check(JsonNode json, boolean update, Cluster cluster, Set<String> dropped) throws Exception {
    // PinotLogicalTableResource.getLogicalAndUnrecognizedPropertiesFromJson (400 on failure)
    Pair<LogicalTableConfig, Map<String, Object>> parsed;
    try {
      parsed = JsonUtils.stringToObjectAndUnrecognizedProperties(json.toString(), LogicalTableConfig.class);
    } catch (Exception e) {
      throw new IllegalArgumentException("Invalid logical table json config. Reason: " + e.getMessage());
    }
    parsed.getRight().keySet().forEach(p -> dropped.add(ContractCheck.keyPath(p)));
    LogicalTableConfig config = parsed.getLeft();
    // addLogicalTable / updateLogicalTable: names translated with no database header
    config.setTableName(DatabaseUtils.translateTableName(config.getTableName(), (String) null));
    LogicalTableConfigUtils.translatePhysicalTableNamesWithDB(config, null);

    // PinotHelixResourceManager.addLogicalTableConfig / updateLogicalTableConfig
    if (StringUtils.isEmpty(config.getBrokerTenant())) {
      config.setBrokerTenant(TagNameUtils.DEFAULT_TENANT_NAME);
    }
    // validateLogicalTableConfig
    LogicalTableConfigUtils.validateLogicalTableConfig(config);
    if (!cluster._brokerTenants.contains(config.getBrokerTenant())) {
      throw new IllegalArgumentException("Invalid logical table. Reason: '" + config.getBrokerTenant()
          + "' should be one of the existing broker tenants");
    }
    if (!cluster._schemas.contains(config.getTableName())) {
      throw new IllegalArgumentException("Invalid logical table. Reason: Schema with same name as logical table '"
          + config.getTableName() + "' does not exist");
    }
    // validateNewLogicalTableConfig (create only; 409 in the controller)
    String name = config.getTableName();
    if (!update && (cluster._tables.contains(TableNameBuilder.OFFLINE.tableNameWithType(name))
        || cluster._tables.contains(TableNameBuilder.REALTIME.tableNameWithType(name)))) {
      throw new IllegalArgumentException("Table name: " + name + " already exists");
    }
    // validatePhysicalTablesExist
    for (Map.Entry<String, PhysicalTableConfig> e : config.getPhysicalTableConfigMap().entrySet()) {
      if (!e.getValue().isMultiCluster() && !cluster._tables.contains(e.getKey())) {
        throw new IllegalArgumentException(
            "Invalid logical table. Reason: '" + e.getKey() + "' should be one of the existing tables");
      }
    }
    // ZKMetadataProvider.setLogicalTableConfig stores it as a ZNRecord; GET reads it back.
    LogicalTableConfig stored = LogicalTableConfigUtils.fromZNRecord(LogicalTableConfigUtils.toZNRecord(config));
    if (!JsonUtils.objectToJsonNode(stored).equals(JsonUtils.objectToJsonNode(config))) {
      throw new IllegalStateException("the config read back from ZooKeeper differs: " + stored + " != " + config);
    }
  }

  /** The cluster state the controller would read from ZooKeeper and Helix. */
  private static final class Cluster {
    final Set<String> _tables = new LinkedHashSet<>();
    final Set<String> _schemas = new LinkedHashSet<>();
    final Set<String> _brokerTenants = new LinkedHashSet<>();

    static Cluster of(JsonNode input, List<String> errors) {
      Cluster c = new Cluster();
      int i = 0;
      for (JsonNode t : input.path("physical_tables")) {
        try {
          TableConfig tc = JsonUtils.jsonNodeToObject(t, TableConfig.class);
          c._tables.add(tc.getTableName());   // with its type suffix, as the property store keys it
          c._brokerTenants.add(TagNameUtils.getTenantFromTag(TagNameUtils.extractBrokerTag(tc.getTenantConfig())));
        } catch (Throwable e) {
          errors.add("physical_tables[" + i + "]: invalid table config JSON: " + ContractCheck.message(e));
        }
        i++;
      }
      for (JsonNode s : input.path("schemas")) {
        c._schemas.add(s.path("schemaName").asText(""));
      }
      if (input.has("broker_tenants")) {
        c._brokerTenants.clear();
        input.path("broker_tenants").forEach(b -> c._brokerTenants.add(b.asText()));
      }
      return c;
    }
  }
}
