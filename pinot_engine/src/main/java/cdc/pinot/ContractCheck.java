// `check` mode: the checks a Pinot controller runs on POST /schemas and POST /tables, in its
// order, from Pinot's own classes, so a rendered artifact is judged by Pinot and not by our
// reading of its docs. Pinot's config classes ignore unknown JSON keys (a misspelt key passes
// validate()), so every input key that does not survive Pinot's parse -> serialise round trip
// is reported too: that is the controller's own "unrecognizedProperties" computation.
//
// Left out (they need a running cluster): the schema-exists lookup (emulated by name),
// tuner configs, min-replica / storage-quota / tenant / instance-assignment / task checks, and
// anything about the stream itself (consumer factory and decoder class names are not loaded).
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
import org.apache.pinot.segment.local.utils.SchemaUtils;
import org.apache.pinot.segment.local.utils.TableConfigUtils;
import org.apache.pinot.spi.config.table.TableConfig;
import org.apache.pinot.spi.data.Schema;
import org.apache.pinot.spi.utils.JsonUtils;
import org.apache.pinot.spi.utils.builder.TableNameBuilder;

final class ContractCheck {
  private ContractCheck() {
  }

  interface Step {
    void run() throws Exception;
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
      check(input.path("schema"), input.path("table"), errors, dropped);
    } catch (Throwable t) {
      errors.add("input: " + message(t));
    }
    Map<String, Object> result = new LinkedHashMap<>();
    result.put("id", id);
    result.put("ok", errors.isEmpty() && dropped.isEmpty());
    result.put("errors", errors);
    result.put("dropped_keys", new ArrayList<>(dropped));
    return result;
  }

  private static void check(JsonNode schemaJson, JsonNode tableJson, List<String> errors, Set<String> dropped) {
    // POST /schemas (PinotSchemaRestletResource.addSchema)
    Schema schema = null;
    try {
      Pair<Schema, Map<String, Object>> parsed =
          JsonUtils.stringToObjectAndUnrecognizedProperties(schemaJson.toString(), Schema.class);
      schema = parsed.getLeft();
      parsed.getRight().keySet().forEach(p -> dropped.add("schema." + keyPath(p)));
    } catch (Throwable t) {
      errors.add("schema: invalid schema JSON: " + message(t));
    }
    if (schema != null) {
      Schema s = schema;
      step(errors, "schema", () -> {
        if (StringUtils.isEmpty(s.getSchemaName())) {
          throw new IllegalArgumentException("Invalid schema. Reason: 'schemaName' should not be null or empty");
        }
        if (s.getSchemaName().contains(TableConfig.TABLE_NAME_FORBIDDEN_SUBSTRING)) {
          throw new IllegalArgumentException("'schemaName' cannot contain double underscore ('__')");
        }
        s.setSchemaName(DatabaseUtils.translateTableName(s.getSchemaName(), (String) null));
        SchemaUtils.validate(s);
      });
    }

    // POST /tables (PinotTableRestletResource.addTable -> TableConfigValidationUtils)
    TableConfig tableConfig;
    try {
      Pair<TableConfig, Map<String, Object>> parsed =
          JsonUtils.stringToObjectAndUnrecognizedProperties(tableJson.toString(), TableConfig.class);
      tableConfig = parsed.getLeft();
      parsed.getRight().keySet().forEach(p -> dropped.add(keyPath(p)));
    } catch (Throwable t) {
      errors.add("table: invalid table config JSON: " + message(t));
      return;
    }
    TableConfig tc = tableConfig;
    if (!step(errors, "table", () -> tc.setTableName(DatabaseUtils.translateTableName(tc.getTableName(),
        (String) null)))) {
      return;
    }
    String rawName = TableNameBuilder.extractRawTableName(tc.getTableName());
    if (schema == null || !rawName.equals(schema.getSchemaName())) {
      // The controller looks the schema up by the table's raw name.
      errors.add("table: Failed to find schema for table: " + tc.getTableName());
      return;
    }
    Schema s = schema;
    step(errors, "table", () -> TableConfigUtils.validate(tc, s, null));
    step(errors, "table", () -> TableConfigUtils.validateTableName(tc));
    // What the controller re-checks whenever this schema changes while the table exists.
    step(errors, "schema+table", () -> SchemaUtils.validate(s, List.of(tc)));
  }

  private static boolean step(List<String> errors, String what, Step step) {
    try {
      step.run();
      return true;
    } catch (Throwable t) {
      errors.add(what + ": " + message(t));
      return false;
    }
  }

  static String message(Throwable t) {
    String m = t.getMessage();
    return m != null ? m : t.toString();
  }

  /**
   * Pinot's flattened JSON pointer ("/a/b/0/c") -> "a.b[0].c"; trailing list indices are cut
   * (a dropped key holding a list is reported once), keys with dots are bracket-quoted.
   */
  static String keyPath(String pointer) {
    String[] parts = pointer.substring(1).split("/", -1);
    int end = parts.length;
    while (end > 1 && parts[end - 1].matches("\\d+")) {
      end--;
    }
    StringBuilder sb = new StringBuilder();
    for (int i = 0; i < end; i++) {
      String p = parts[i];
      if (i > 0 && p.matches("\\d+")) {
        sb.append('[').append(p).append(']');
      } else if (p.contains(".") || p.contains("[")) {
        sb.append("[\"").append(p).append("\"]");
      } else {
        sb.append(sb.length() > 0 ? "." : "").append(p);
      }
    }
    return sb.toString();
  }
}
