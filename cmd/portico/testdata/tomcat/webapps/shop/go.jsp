<%-- A relative redirect, as a servlet app writes it. --%><%
  response.sendRedirect("index.jsp?from=go");
%>
